"""`tandem usage` on a real ledger in TANDEM_DATA_DIR."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lsp_server.ledger import COLUMNS, Entry, Ledger, default_path
from lsp_server.prices import Prices
from lsp_server.tools import usage

LOCAL = Entry("completion", "local", "gemma-3-270m", 3000, 100, request_id="local-1")
CLOUD = Entry("explain", "cloud", "gpt-4o", 1000, 200, request_id="cloud-1")
UNPRICED = Entry("debug", "cloud", "brand-new-model", 10, 10, request_id="cloud-2")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TANDEM_DATA_DIR", str(tmp_path))
    return tmp_path


def seed(data_dir: Path, *entries: Entry, accepted: tuple[str, ...] = ()) -> None:
    ledger = Ledger(default_path(data_dir), Prices.load())
    for entry in entries:
        ledger.record(entry)
    for request_id in accepted:
        outcome = {"shown": 1, "accepted": 1, "language": "python", "accepted_chars": 20, "retained_chars_30s": 15}
        ledger.record_outcome(request_id, {**outcome, "retained_chars_5m": 12})
    ledger.close()


def test_json_prints_the_totals(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed(data_dir, LOCAL, CLOUD)
    assert usage.main(["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    by_backend = {row["backend"]: row for row in report["totals"]}
    assert by_backend["cloud"] == {
        "backend": "cloud",
        "model": "gpt-4o",
        "kind": "explain",
        "requests": 1,
        "promptTokens": 1000,
        "completionTokens": 200,
        "cachedTokens": 0,
        "costUsd": pytest.approx(0.0045),
        **dict.fromkeys(("shown", "accepted", "acceptedChars", "retainedChars30s", "retainedChars5m", "reversals"), 0),
    }
    assert by_backend["local"]["promptTokens"] == 3000
    assert by_backend["local"]["costUsd"] == 0
    assert report["localShare"] == pytest.approx(3100 / 4300)
    assert set(report["periods"]) == {"today", "thisMonth", "allTime"}
    assert report["pricesDate"] == Prices.load().date


def test_csv_prints_every_request(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed(data_dir, LOCAL, CLOUD, accepted=("local-1",))
    assert usage.main(["--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["request_id"] for row in rows] == ["local-1", "cloud-1"]
    assert list(rows[0]) == ["utc", *COLUMNS]
    assert rows[0]["accepted"] == "1"
    assert float(rows[1]["cost_usd"]) == pytest.approx(0.0045)


def test_table_shows_periods_share_savings_and_acceptance(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed(data_dir, LOCAL, CLOUD, UNPRICED, accepted=("local-1",))
    assert usage.main([]) == 0
    out = capsys.readouterr().out
    for title in ("Today", "This month", "All time"):
        assert f"\n{title}\n" in out
    assert "  local    gemma-3-270m     completion         1          3,000" in out
    assert "$0.0045" in out
    assert f"local share {3100 / 4320:.1%} of tokens" in out
    saved = Prices.load().cost("gpt-4o", 3000, 100)
    assert f"saved ${saved:.4f} against gpt-4o" in out
    assert (
        "gemma-3-270m (python): 1 of 1 shown (100%); 20 characters accepted, 15 still there after 30 s, 12 after 5 min"
    ) in out
    assert "No price known for brand-new-model" in out


def test_an_empty_ledger_says_so(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert usage.main([]) == 0
    out = capsys.readouterr().out
    assert out.count("no requests") == 3
    assert str(default_path(data_dir)) in out
    assert usage.main(["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"] == []


def test_render_table_warns_when_the_ledger_is_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    ledger = Ledger(blocker / "ledger.sqlite3", Prices.load(), on_problem=lambda message: None)
    try:
        ledger.record(CLOUD)
        table = usage.render_table(ledger.report())
    finally:
        ledger.close()
    assert "in memory only" in table
    assert "gpt-4o" in table


def test_json_and_csv_are_exclusive(data_dir: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        usage.main(["--json", "--csv"])
    assert exit_.value.code == 2


def test_the_command_line_passes_options_through(data_dir: Path) -> None:
    # `tandem usage --json`: an option right after the command's name reaches the command.
    seed(data_dir, LOCAL)
    run = subprocess.run(
        [sys.executable, "-m", "lsp_server", "usage", "--json"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert [row["backend"] for row in json.loads(run.stdout)["totals"]] == ["local"]
