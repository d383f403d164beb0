"""End to end: completion quality features through the real server and the embedded model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, Client
from tests.e2e.test_completion import complete, end_position, open_doc

QUEUE = """from collections import deque


class Queue:
    def __init__(self):
        self.queue = deque()

    def push(self, item):
        self.queue.append(item)

    def pop(self):
        ret"""


async def test_cursor_inside_a_word_continues_the_word(client: Client, editor: str) -> None:
    open_doc(client, QUEUE)
    items = await complete(client, end_position(QUEUE, editor))
    assert len(items) == 1
    text = items[0].insert_text
    assert isinstance(text, str)
    # Token healing: `ret|` goes on as `return ...`, and the `ret` already typed is not shown again.
    assert text.startswith("urn"), text
    assert "ret" not in text[:3]


def test_eval_runs_end_to_end_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    done = subprocess.run(
        [sys.executable, "-m", "lsp_server", "eval", "--holes", "3", "--seed", "7", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| exact first line |" in done.stdout
    result = json.loads(out.read_text())
    assert result["holes"] == 3 and len(result["details"]) == 3
    for side in ("server", "raw"):
        metrics = result[side]
        assert metrics["n"] == 3
        for key in ("exact", "similarity", "repeats", "empty"):
            assert 0.0 <= metrics[key] <= 1.0
        assert metrics["p50_ms"] > 0 and metrics["p95_ms"] >= metrics["p50_ms"]
    # The raw model answered every hole with at most one line.
    assert all("\n" not in hole["raw"] for hole in result["details"])


def test_eval_confidence_scenario_counts_what_each_side_showed(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    command = [sys.executable, "-m", "lsp_server", "eval", "--scenario", "confidence", "--holes", "4", "--seed", "3"]
    done = subprocess.run(
        [*command, "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line.split("|")[2:4] for line in done.stdout.splitlines() if "|" in line}
    details = json.loads(out.read_text())["details"]
    for column, side in enumerate(("auto", "off")):
        shown = sum(1 for hole in details if hole[side].strip())
        assert int(rows["suggestions shown"][column]) == shown
        assert int(rows["tokens generated"][column]) > 0  # read from the ledger that side's server wrote
