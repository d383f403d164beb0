"""Neovim: the real plugin in a real headless Neovim 0.11, against the real `tandem serve` and the embedded model."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

NVIM = Path(sys.executable).parent / "nvim"
DRIVER = Path(__file__).parent / "nvim" / "drive.lua"
SOURCE = '''import os


def read_lines(path):
    """Return the lines of a text file."""
    with open(path) as handle:
        return handle.read().splitlines()


'''
# Typed after `Go` at the end of SOURCE; the cursor ends on LINE (0-based row 10), after non-ASCII text.
TYPED = 'def greet(name):\r    print("Grüße 😀", '
LINE = '    print("Grüße 😀", '
ROW = 10
SECRET = "sk-test-not-a-real-key"
INLINE = "textDocument/inlineCompletion"


@pytest.fixture(scope="module")
def nvim(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One scripted Neovim session (drive.lua): what the plugin drew and the buffer held at each step."""
    tmp = tmp_path_factory.mktemp("nvim")
    sample = tmp / "sample.py"
    sample.write_text(SOURCE, encoding="utf-8")
    result = tmp / "result.json"
    shots = os.environ.get("TANDEM_SCREENSHOTS")  # `make screenshots`: the README's pictures
    test_input = {
        "plugin": str(REPO / "editors" / "nvim"),
        "cmd": [sys.executable, "-m", "lsp_server", "serve"],
        "env": {
            "TANDEM_DATA_DIR": str(tmp / "data"),
            "OPENAI_API_KEY": SECRET,
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",  # nothing may leave the machine
        },
        # every suggestion shown: what the model is sure of at this spot is not what this test is about
        "settings": {
            "completion": {"multiline": "always", "maxTokens": 40, "minConfidence": 0},
            "routes": {"explain": "local"},
        },
        "debounce_ms": 150,  # keys come 30 ms apart: no request before the typing stops, even on a busy machine
        "file": str(sample),
        "typed": TYPED,
        "second": "return",
        "result": str(result),
    }
    if shots:
        test_input["screenshots"] = str(Path(shots).resolve())
    env = {**os.environ, "TANDEM_NVIM_TEST": json.dumps(test_input), "XDG_STATE_HOME": str(tmp / "state")}
    run = subprocess.run(
        [str(NVIM), "--headless", "-u", "NONE", "-i", "NONE", "-n", "-l", str(DRIVER)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200 if shots else 240,  # a whole local Explain for the picture
    )
    log = tmp / "state" / "nvim" / "lsp.log"
    server_log = log.read_text(encoding="utf-8", errors="replace")[-6000:] if log.exists() else "(no LSP log)"
    record: dict[str, Any] = json.loads(result.read_text(encoding="utf-8")) if result.exists() else {}
    if run.returncode != 0 or "error" in record or not record:
        pytest.fail(
            f"the Neovim session failed (rc {run.returncode}): {record.get('error')}\n"
            f"stderr: {run.stderr[-3000:]}\nLSP log:\n{server_log}"
        )
    record["sample"] = sample.as_uri()
    record["data"] = str(tmp / "data")
    if shots:
        for page in Path(shots).resolve().glob("nvim-*.html"):
            render(page)
    return record


def render(page: Path) -> None:
    """Turn an HTML picture of a Neovim window (TOhtml) into a PNG beside it, with Chromium; drop the HTML."""
    rows = page.read_text(encoding="utf-8").split("<pre>")[1].split("</pre>")[0].count("\n")
    subprocess.run(
        [
            shutil.which("chromium") or "/usr/bin/chromium",
            *("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"),
            f"--window-size=760,{min(560, 40 + 17 * rows)}",
            f"--screenshot={page.with_suffix('.png')}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    page.unlink()


def byte_col(text: str) -> int:
    return len(text.encode("utf-8"))


def test_utf8_is_negotiated_and_ghost_text_sits_at_the_cursor_byte_column(nvim: dict[str, Any]) -> None:
    assert nvim["encoding"] == "utf-8"
    before = nvim["before"]
    assert before["lines"][ROW] == LINE
    assert before["cursor"] == [ROW + 1, byte_col(LINE)]
    assert byte_col(LINE) != len(LINE)  # the non-ASCII text makes bytes and characters differ
    assert nvim["notified"]  # the request's position, as the server echoes it in tandem/ghostText
    assert all(position == {"line": ROW, "character": byte_col(LINE)} for position in nvim["notified"])
    for ghost in nvim["ghosts"]:
        assert (ghost["row"], ghost["col"], ghost["marks"]) == (ROW, byte_col(LINE), 1)


def test_ghost_text_grows_as_the_server_streams(nvim: dict[str, Any]) -> None:
    texts = [ghost["text"] for ghost in nvim["ghosts"]]
    assert len(texts) >= 2, texts
    for shorter, longer in itertools.pairwise(texts):
        assert longer.startswith(shorter) and len(longer) > len(shorter), texts
    final = nvim["before"]["ghost"]["text"]
    assert texts[-1] == final
    assert "\n" in final  # the first line inline, the rest as virtual lines


def test_accept_word_then_tab_inserts_after_the_cursor_in_undo_steps(nvim: dict[str, Any]) -> None:
    before, after_word, after = nvim["before"], nvim["after_word"], nvim["after_accept"]
    final = before["ghost"]["text"]
    word = re.match(r"[ \t]*(\w+|[^\w\s]+)", final)
    assert word is not None
    assert after_word["lines"][ROW] == LINE + word.group(0)
    assert after_word["ghost"]["text"] == final[word.end() :]
    assert after_word["ghost"]["col"] == byte_col(LINE + word.group(0))
    inserted = (LINE + final).split("\n")
    assert after["lines"] == before["lines"][:ROW] + inserted + before["lines"][ROW + 1 :]
    assert after["mode"] == "i"
    assert after["cursor"] == [ROW + len(inserted), byte_col(inserted[-1])]
    assert nvim["undo1"]["lines"] == after_word["lines"]  # one `u` takes back the Tab's text, no more
    assert nvim["undo2"]["lines"] == before["lines"]


def test_accept_word_reports_its_length_and_tab_the_whole_accept(nvim: dict[str, Any]) -> None:
    final = nvim["before"]["ghost"]["text"]
    word = nvim["after_word"]["lines"][ROW][len(LINE) :]
    partial, whole = nvim["accept_commands"]
    assert partial["command"] == "tandem.partiallyAccepted"
    assert partial["arguments"][1] == byte_col(word)  # utf-8 positions: the length in bytes
    assert (whole["command"], whole["arguments"]) == ("tandem.accepted", [partial["arguments"][0]])
    # The server found the accepted text in the document: all of it, in characters.
    db = sqlite3.connect(Path(nvim["data"]) / "ledger.sqlite3")
    row = db.execute(
        "SELECT shown, accepted, accepted_chars, language FROM requests WHERE request_id = ?", whole["arguments"]
    ).fetchone()
    assert row == (1, 1, len(final), "python")


def test_dismiss_hides_the_ghost_text_and_tab_then_inserts_a_tab(nvim: dict[str, Any]) -> None:
    shown, dismissed, tab = nvim["before_dismiss"], nvim["after_dismiss"], nvim["after_tab"]
    assert shown["ghost"] is not None and shown["ghost"]["text"]
    assert dismissed.get("ghost") is None
    assert dismissed["lines"] == shown["lines"]
    assert tab["lines"][-1] == shown["lines"][-1] + "\t"


def test_leaving_insert_mode_cancels_the_request_in_flight(nvim: dict[str, Any]) -> None:
    assert {"method": INLINE, "type": "cancel"} in nvim["requests"]
    leave = nvim["after_leave"]
    assert leave["mode"] == "n"
    assert leave.get("ghost") is None


def test_explain_streams_into_a_markdown_split_and_closing_it_cancels(nvim: dict[str, Any]) -> None:
    streaming, chunks = nvim["explain"]
    assert streaming["shown"] and streaming["filetype"] == "markdown"
    assert streaming["lines"][0].startswith("# explain ") and streaming["lines"][0].endswith("sample.py:4-7")
    assert len(chunks) >= 3
    assert {(c["task"], c["uri"]) for c in chunks} == {("explain", nvim["sample"])}
    assert len({c["id"] for c in chunks}) == 1
    assert "\n".join(streaming["lines"][2:]) == "".join(c["text"] for c in chunks)  # the stream, as it came
    assert {"method": "workspace/executeCommand", "type": "cancel"} in nvim["explain_requests"]
    final = nvim["explained"]
    assert not final["shown"]
    assert any(re.fullmatch(r"\*local · .+ · cancelled\*", line) for line in final["lines"]), final["lines"]


def test_yanked_lines_reach_the_servers_ring_and_a_yanked_word_does_not(nvim: dict[str, Any]) -> None:
    before, after = nvim["ring_before"], nvim["ring_after"]
    assert after[:-1] == list(before)  # `yiw` added nothing (an empty list comes back as {})
    assert after[-1]["lines"] == 3 and after[-1]["uri"].endswith("/sample.py")  # `3yy`


def test_status_command_shows_the_server_status(nvim: dict[str, Any]) -> None:
    status = nvim["status"]
    assert status["filetype"] == "markdown"
    lines = status["lines"]
    assert lines[0] == "# tandem status"
    assert "  - state: ready" in lines
    assert "  - multiline: always" in lines  # the settings given to setup() reached the server
    requests = [int(line.split(": ")[1]) for line in lines if line.startswith("  - inlineRequests: ")]
    assert requests and requests[0] >= 3


def test_usage_command_shows_tokens_and_the_accepted_completion(nvim: dict[str, Any]) -> None:
    lines = nvim["usage"]["lines"]
    assert lines[0] == "# tandem usage"
    rows = [line.split(" | ") for line in lines if line.startswith("| local | ")]
    assert {row[2] for row in rows} == {"completion", "explain"}
    assert all(int(row[3]) >= 1 for row in rows)
    accepted = r"- .+ \(python\): 1 of \d+ shown; \d+ characters accepted, \d+ still there after 30 s, \d+ after 5 min"
    assert any(re.fullmatch(accepted, line) for line in lines), lines  # tandem.accepted ran once


def test_toggle_pauses_completions(nvim: dict[str, Any]) -> None:
    paused = nvim["paused"]
    assert paused["state"]["lines"][-1].endswith("total = ")
    assert paused["state"]["mode"] == "i"
    assert [r for r in paused["requests"] if r["method"] == INLINE] == []
    assert paused["state"].get("ghost") is None
    assert "tandem: completions paused" in nvim["messages"]
    assert "inline completions paused" in "\n".join(nvim["health"])


def test_checkhealth_reports_server_model_gpu_and_key_without_printing_it(nvim: dict[str, Any]) -> None:
    text = "\n".join(nvim["health"])
    assert "OK server command:" in text
    assert "OK server running (client 1, utf-8 positions)" in text
    assert re.search(r"OK model .+ ready", text)
    assert re.search(r"GPU offload (on|off)", text)
    assert "OK OPENAI_API_KEY is set" in text
    assert SECRET not in text
    assert "Error executing" not in nvim["messages"] and "E5108" not in nvim["messages"], nvim["messages"]
