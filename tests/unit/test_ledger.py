"""The ledger, prices and budgets on real SQLite files."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from lsp_server import ledger as ledger_module
from lsp_server.budget import Budget
from lsp_server.ledger import COLUMNS, Entry, Ledger, day_bounds, default_path, month_bounds
from lsp_server.prices import Prices

# A fixed local time, so "today" and "this month" do not depend on when the tests run.
NOW = datetime(2025, 6, 15, 12, 0).timestamp()
EARLIER_THIS_MONTH = datetime(2025, 6, 3, 9, 0).timestamp()
LAST_MONTH = datetime(2025, 5, 20, 9, 0).timestamp()

OpenLedger = Callable[..., Ledger]


@pytest.fixture
def prices() -> Prices:
    return Prices.load()


@pytest.fixture
def open_ledger(tmp_path: Path, prices: Prices) -> Iterator[OpenLedger]:
    opened: list[Ledger] = []

    def open_(path: Path | None = None, **kwargs: Any) -> Ledger:
        ledger = Ledger(path or default_path(tmp_path), kwargs.pop("prices", prices), **kwargs)
        opened.append(ledger)
        return ledger

    yield open_
    for ledger in opened:
        ledger.close()


def local(prompt: int = 1000, completion: int = 50, **kwargs: Any) -> Entry:
    return Entry("completion", "local", "gemma-3-270m", prompt, completion, **kwargs)


def cloud(prompt: int = 1000, completion: int = 200, **kwargs: Any) -> Entry:
    kwargs.setdefault("model", "gpt-4o")
    return Entry("explain", "cloud", prompt_tokens=prompt, completion_tokens=completion, **kwargs)


def query(path: Path, sql: str) -> list[Any]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# --- prices ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        pytest.param("gpt-4o", (2.5, 10.0), id="exact"),
        pytest.param("GPT-4o", (2.5, 10.0), id="case-insensitive"),
        pytest.param("gpt-4o-2024-08-06", (2.5, 10.0), id="dated-snapshot"),
        pytest.param("gpt-4o-mini-2024-07-18", (0.15, 0.6), id="longest-family-wins"),
        pytest.param("openai/gpt-4.1-nano", (0.1, 0.4), id="router-prefix"),
        pytest.param("models/gemini-2.5-pro", (1.25, 10.0), id="gemini-openai-prefix"),
        pytest.param("claude-sonnet-4-20250514", (3.0, 15.0), id="claude-date"),
        pytest.param("codestral-latest", (0.3, 0.9), id="latest-alias"),
        pytest.param("gpt-4-turbo-preview", (10.0, 30.0), id="preview-alias"),
        pytest.param("codestral-22b-v0.1", None, id="local-gguf-name-is-not-the-cloud-model"),
        pytest.param("gemma-3-270m", None, id="unknown"),
    ],
)
def test_price_lookup(prices: Prices, model: str, expected: tuple[float, float] | None) -> None:
    price = prices.price(model)
    assert (None if price is None else (price.input_per_mtok, price.output_per_mtok)) == expected


def test_price_table_has_its_date_and_the_common_cloud_models(prices: Prices) -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", prices.date)
    required = [
        *("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4-turbo"),
        *("gpt-4", "o3", "o4-mini", "claude-sonnet-4", "claude-3-5-haiku", "gemini-2.5-pro"),
        *("gemini-2.5-flash", "mistral-large", "codestral", "deepseek-chat", "deepseek-reasoner"),
    ]
    for model in required:
        price = prices.price(model)
        assert price is not None, model
        assert 0 < price.input_per_mtok <= price.output_per_mtok, model


@pytest.mark.parametrize(
    ("model", "prompt", "completion", "cached", "expected"),
    [
        pytest.param("gpt-4o", 1000, 200, 0, (1000 * 2.5 + 200 * 10.0) / 1e6, id="plain"),
        pytest.param("gpt-4o", 1000, 200, 400, (600 * 2.5 + 400 * 1.25 + 200 * 10.0) / 1e6, id="cached-input"),
        pytest.param("gpt-4", 1000, 0, 400, 1000 * 30.0 / 1e6, id="no-cached-price-uses-input"),
        pytest.param("gemma-3-270m", 10**6, 10**6, 0, 0.0, id="unknown-is-free"),
    ],
)
def test_cost(prices: Prices, model: str, prompt: int, completion: int, cached: int, expected: float) -> None:
    assert prices.cost(model, prompt, completion, cached) == pytest.approx(expected)


def test_overrides_add_and_replace_prices() -> None:
    prices = Prices.load({"team-fleet": {"input": 1.0, "output": 2.0}, "gpt-4o": {"input": 5, "output": 20}})
    assert prices.cost("team-fleet", 10**6, 10**6) == pytest.approx(3.0)
    assert prices.cost("gpt-4o-2024-08-06", 10**6, 0) == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        pytest.param(None, 0.0, id="off-by-default"),
        pytest.param(0.36, 1800.0 / 3.6e6 * 0.36, id="hourly-rate"),
    ],
)
def test_local_rows_cost_only_the_optional_energy_estimate(
    open_ledger: OpenLedger, rate: float | None, expected: float
) -> None:
    ledger = open_ledger(prices=Prices.load(energy_usd_per_hour=rate))
    # A local model whose name matches a cloud price must still not be charged that price.
    ledger.record(Entry("completion", "local", "codestral-latest", 10**6, 10**6, total_ms=1800.0))
    [row] = ledger.report()["totals"]
    assert row["costUsd"] == pytest.approx(expected)


# --- recording and reporting ----------------------------------------------------------------


def test_report_totals_per_backend_model_and_task(open_ledger: OpenLedger) -> None:
    ledger = open_ledger()
    ledger.record(local(1000, 40))
    ledger.record(local(500, 10))
    ledger.record(cloud(2000, 300))
    report = ledger.report()
    assert report["totals"] == [
        {
            "backend": "cloud",
            "model": "gpt-4o",
            "kind": "explain",
            "requests": 1,
            "promptTokens": 2000,
            "completionTokens": 300,
            "cachedTokens": 0,
            "costUsd": pytest.approx((2000 * 2.5 + 300 * 10.0) / 1e6),
            **NOTHING_SHOWN,
        },
        {
            "backend": "local",
            "model": "gemma-3-270m",
            "kind": "completion",
            "requests": 2,
            "promptTokens": 1500,
            "completionTokens": 50,
            "cachedTokens": 0,
            "costUsd": 0.0,
            **NOTHING_SHOWN,
        },
    ]
    assert report["pricesDate"] == Prices.load().date


def test_periods_split_today_this_month_and_all_time(open_ledger: OpenLedger) -> None:
    ledger = open_ledger()
    ledger.record(cloud(100, 10, time=NOW - 60))
    ledger.record(cloud(200, 20, time=EARLIER_THIS_MONTH))
    ledger.record(cloud(400, 40, time=LAST_MONTH))
    periods = ledger.report(now=NOW)["periods"]
    assert [periods[name]["promptTokens"] for name in ("today", "thisMonth", "allTime")] == [
        100,
        300,
        700,
    ]
    assert [periods[name]["requests"] for name in ("today", "thisMonth", "allTime")] == [1, 2, 3]
    assert periods["today"]["since"] == datetime(2025, 6, 15).timestamp()
    assert periods["thisMonth"]["since"] == datetime(2025, 6, 1).timestamp()
    assert periods["thisMonth"]["costUsd"] == pytest.approx((300 * 2.5 + 30 * 10.0) / 1e6)


def test_local_share_and_money_saved_against_the_reference_model(open_ledger: OpenLedger) -> None:
    ledger = open_ledger()
    ledger.record(local(3000, 0, cached_tokens=2000))
    ledger.record(cloud(1000, 0))
    report = ledger.report()
    assert report["localShare"] == pytest.approx(0.75)
    # Local KV-cache hits are priced as the cloud's cached input, a conservative estimate.
    assert report["savedUsd"] == pytest.approx((1000 * 2.5 + 2000 * 1.25) / 1e6)
    assert report["referenceModel"] == "gpt-4o"


NOTHING_SHOWN = dict.fromkeys(
    ("shown", "accepted", "acceptedChars", "retainedChars30s", "retainedChars5m", "reversals"), 0
)


def test_outcomes_per_model_and_language(open_ledger: OpenLedger) -> None:
    ledger = open_ledger()
    shown = [local() for _ in range(5)]
    for entry in [*shown, local(outcome="cancelled"), local()]:  # the last two never shown
        ledger.record(entry)
    for entry in shown:
        ledger.record_outcome(entry.request_id, {"shown": 1, "language": "python"})
    ledger.record_outcome(shown[4].request_id, {"language": "rust"})
    accepted = {"accepted": 1, "accepted_chars": 20, "retained_chars_30s": 15, "retained_chars_5m": 12}
    ledger.record_outcome(shown[0].request_id, accepted)
    ledger.record_outcome(shown[1].request_id, {"accepted_chars": 4, "retained_chars_30s": 4})  # partly
    ledger.record_outcome(shown[2].request_id, {**accepted, "reversed": 1, "retained_chars_30s": 0})
    ledger.record_outcome("no-such-request", {"accepted": 1})
    report = ledger.report()
    assert report["acceptance"] == [
        {
            "model": "gemma-3-270m",
            "language": "python",
            "shown": 4,
            "accepted": 2,
            "acceptedChars": 44,
            "retainedChars30s": 19,
            "retainedChars5m": 24,
            "reversals": 1,
            "partiallyAccepted": 1,
            "rate": 0.5,
        },
        {"model": "gemma-3-270m", "language": "rust", **NOTHING_SHOWN, "shown": 1, "partiallyAccepted": 0, "rate": 0.0},
    ]
    row = next(row for row in report["totals"] if row["model"] == "gemma-3-270m")
    assert {key: row[key] for key in NOTHING_SHOWN} == {
        "shown": 5,
        "accepted": 2,
        "acceptedChars": 44,
        "retainedChars30s": 19,
        "retainedChars5m": 24,
        "reversals": 1,
    }


def test_cloud_models_without_a_price_are_named(open_ledger: OpenLedger) -> None:
    ledger = open_ledger()
    ledger.record(cloud(model="brand-new-model"))
    ledger.record(cloud())
    report = ledger.report()
    assert report["unpricedModels"] == ["brand-new-model"]


def test_spent_counts_money_since_a_time_but_not_local_energy(tmp_path: Path) -> None:
    ledger = Ledger(default_path(tmp_path), Prices.load(energy_usd_per_hour=100.0))
    try:
        ledger.record(cloud(10**6, 0, time=NOW - 60))
        ledger.record(cloud(10**6, 0, time=LAST_MONTH))
        ledger.record(local(total_ms=3.6e6, time=NOW - 60))
        assert ledger.spent_usd(day_bounds(NOW)[0]) == pytest.approx(2.5)
        assert ledger.spent_usd(0) == pytest.approx(5.0)
    finally:
        ledger.close()


def test_a_request_id_is_written_once(open_ledger: OpenLedger, tmp_path: Path) -> None:
    ledger = open_ledger()
    entry = cloud()
    ledger.record(entry)
    ledger.record(entry)
    ledger.flush()
    assert query(default_path(tmp_path), "SELECT COUNT(*) FROM requests") == [(1,)]


def test_rows_yield_every_column_oldest_first(open_ledger: OpenLedger) -> None:
    ledger = open_ledger()
    entries = [local(i, 1, time=NOW + i) for i in range(2500)]  # more than one page
    for entry in entries:
        ledger.record(entry)
    rows = list(ledger.rows())
    assert [row["request_id"] for row in rows] == [entry.request_id for entry in entries]
    assert tuple(rows[0]) == COLUMNS
    assert rows[7]["prompt_tokens"] == 7


def test_record_never_waits_for_the_database(open_ledger: OpenLedger, tmp_path: Path) -> None:
    ledger = open_ledger()
    ledger.flush()
    blocker = sqlite3.connect(default_path(tmp_path), isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        ledger.record(cloud())  # returns while the lock is held: the caller's thread never touches the database
        assert blocker.in_transaction
        with pytest.raises(TimeoutError):  # the row waits in the writer while the lock is held
            ledger.flush(timeout=0.2)
        blocker.execute("COMMIT")
        ledger.flush(timeout=30)  # the writer waits out the lock instead of giving up
    finally:
        blocker.close()
    assert not ledger.in_memory
    assert query(default_path(tmp_path), "SELECT COUNT(*) FROM requests") == [(1,)]


def test_close_writes_what_is_queued(tmp_path: Path, prices: Prices) -> None:
    ledger = Ledger(default_path(tmp_path), prices)
    for _ in range(300):
        ledger.record(local())
    ledger.close()
    assert query(default_path(tmp_path), "SELECT COUNT(*) FROM requests") == [(300,)]


def test_a_request_that_finishes_after_close_is_still_recorded(tmp_path: Path, prices: Prices) -> None:
    """A completion still running when the server shuts down records its row after close()."""
    ledger = Ledger(default_path(tmp_path), prices)
    ledger.record(local(request_id="before"))
    ledger.close()
    ledger.record(local(request_id="late"))  # written at once, not raised and not dropped
    ledger.record_outcome("late", {"accepted": 1})
    assert query(default_path(tmp_path), "SELECT request_id, accepted FROM requests") == [("before", 0), ("late", 1)]
    with pytest.raises(RuntimeError, match="closed"):
        ledger.report()


# --- schema ---------------------------------------------------------------------------------


def test_new_file_has_a_rollback_journal_at_the_current_version(open_ledger: OpenLedger, tmp_path: Path) -> None:
    open_ledger().flush()
    path = default_path(tmp_path)
    # Not WAL: its memory-mapped -shm index is a SIGBUS once the files turn immutable.
    assert query(path, "PRAGMA journal_mode") == [("delete",)]
    assert query(path, "PRAGMA user_version") == [(len(ledger_module.MIGRATIONS),)]


def test_a_wal_ledger_of_an_older_version_is_converted(open_ledger: OpenLedger, tmp_path: Path) -> None:
    path = default_path(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    ledger_module.migrate(conn)
    conn.close()
    ledger = open_ledger(path)
    ledger.record(cloud())
    ledger.flush()
    assert query(path, "PRAGMA journal_mode") == [("delete",)]
    assert not path.with_name(path.name + "-shm").exists()


def test_a_wal_ledger_held_open_by_an_older_tandem_is_shared(open_ledger: OpenLedger, tmp_path: Path) -> None:
    path = default_path(tmp_path)
    older = sqlite3.connect(path, isolation_level=None)
    older.execute("PRAGMA journal_mode = WAL")
    ledger_module.migrate(older)
    older.execute("SELECT COUNT(*) FROM requests").fetchall()
    try:
        problems: list[str] = []
        ledger = open_ledger(path, on_problem=problems.append)
        ledger.record(cloud())
        ledger.flush(timeout=30)  # waits out the busy conversion, then writes in WAL mode
        assert not ledger.in_memory and problems == []
        assert older.execute("SELECT COUNT(*) FROM requests").fetchall() == [(1,)]
    finally:
        older.close()


def test_opening_a_v0_file_upgrades_it(open_ledger: OpenLedger, tmp_path: Path) -> None:
    path = default_path(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.execute("INSERT INTO notes VALUES ('kept')")
    conn.commit()
    conn.close()
    ledger = open_ledger(path)
    ledger.record(cloud())
    ledger.flush()
    assert query(path, "PRAGMA user_version") == [(len(ledger_module.MIGRATIONS),)]
    assert query(path, "SELECT text FROM notes") == [("kept",)]
    assert query(path, "SELECT COUNT(*) FROM requests") == [(1,)]


def test_a_new_migration_upgrades_an_existing_ledger_keeping_its_rows(
    open_ledger: OpenLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = open_ledger()
    first.record(cloud())
    first.close()
    monkeypatch.setattr(
        ledger_module,
        "MIGRATIONS",
        (*ledger_module.MIGRATIONS, ("ALTER TABLE requests ADD COLUMN note TEXT DEFAULT 'v2'",)),
    )
    second = open_ledger()
    second.record(cloud())
    second.flush()
    path = default_path(tmp_path)
    assert query(path, "PRAGMA user_version") == [(len(ledger_module.MIGRATIONS),)]
    assert query(path, "SELECT note FROM requests") == [("v2",), ("v2",)]


def test_a_version_1_ledger_keeps_its_rows_and_counts_its_completions_as_shown(
    open_ledger: OpenLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(ledger_module, "MIGRATIONS", ledger_module.MIGRATIONS[:1])
        old = open_ledger()
        for entry in (local(request_id="taken"), local(request_id="left"), local(outcome="empty"), cloud()):
            old.record(entry)
        old.flush()
        old._write(("UPDATE requests SET accepted = 1 WHERE request_id = 'taken'", ()))
        old.close()
    ledger = open_ledger()
    report = ledger.report()
    assert report["acceptance"] == [
        {
            "model": "gemma-3-270m",
            "language": "",
            **NOTHING_SHOWN,
            "shown": 2,
            "accepted": 1,
            "partiallyAccepted": 0,
            "rate": 0.5,
        }
    ]
    assert sum(row["requests"] for row in report["totals"]) == 4


def test_a_file_from_a_newer_version_is_used_as_it_is(open_ledger: OpenLedger, tmp_path: Path) -> None:
    path = default_path(tmp_path)
    open_ledger().close()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE requests ADD COLUMN later TEXT")
    conn.execute("PRAGMA user_version = 7")
    conn.commit()
    conn.close()
    problems: list[str] = []
    ledger = open_ledger(path, on_problem=problems.append)
    ledger.record(cloud())
    assert ledger.report()["totals"][0]["requests"] == 1
    assert problems == []
    assert query(path, "PRAGMA user_version") == [(7,)]


# --- budgets --------------------------------------------------------------------------------

# gpt-4o input costs $2.50 per million tokens: 100,000 prompt tokens cost $0.25.
QUARTER = 100_000


@pytest.mark.parametrize(
    ("daily", "monthly", "today", "earlier", "prompt", "allowed", "reason"),
    [
        pytest.param(None, None, 40, 0, QUARTER, True, None, id="no-budget"),
        pytest.param(1.0, None, 0, 0, QUARTER, True, None, id="under-daily"),
        pytest.param(1.0, None, 3, 0, 2 * QUARTER, False, "spent today", id="estimate-over-daily"),
        pytest.param(1.0, None, 4, 0, 0, False, "spent today", id="daily-used-up"),
        pytest.param(1.0, None, 0, 8, QUARTER, True, None, id="earlier-days-do-not-count"),
        pytest.param(None, 2.0, 0, 7, 2 * QUARTER, False, "spent this month", id="over-monthly"),
        pytest.param(1.0, 10.0, 0, 7, QUARTER, True, None, id="both-with-room"),
    ],
)
def test_budget_decisions(
    open_ledger: OpenLedger,
    prices: Prices,
    daily: float | None,
    monthly: float | None,
    today: int,
    earlier: int,
    prompt: int,
    allowed: bool,
    reason: str | None,
) -> None:
    ledger = open_ledger()
    for _ in range(today):
        ledger.record(cloud(QUARTER, 0, time=NOW - 60))
    for _ in range(earlier):
        ledger.record(cloud(QUARTER, 0, time=EARLIER_THIS_MONTH))
    decision = Budget(ledger, prices, daily, monthly).check("gpt-4o", prompt, 0, now=NOW)
    assert decision.allowed is allowed
    if reason is None:
        assert decision.message is None
    else:
        assert decision.message is not None
        assert reason in decision.message


def test_refusal_says_what_was_spent_and_when_the_budget_resets(open_ledger: OpenLedger, prices: Prices) -> None:
    ledger = open_ledger()
    ledger.record(cloud(380_000, 0, time=NOW - 60))  # $0.95
    decision = Budget(ledger, prices, 1.0, None).check("gpt-4o", 20_000, 4_000, now=NOW)
    assert not decision.allowed
    assert decision.message == (
        "Cloud budget reached: $0.95 of $1.00 spent today and this request could cost up to "
        "$0.09; it resets at 2025-06-16 00:00 local time (in 12 h 0 min)."
    )


def test_monthly_refusal_resets_on_the_first_of_next_month(open_ledger: OpenLedger, prices: Prices) -> None:
    ledger = open_ledger()
    ledger.record(cloud(2 * 10**6, 0, time=EARLIER_THIS_MONTH))  # $5.00
    decision = Budget(ledger, prices, None, 5.0).check("gpt-4o", 10, 10, now=NOW)
    assert decision.message is not None
    assert "$5.00 of $5.00 spent this month" in decision.message
    assert "2025-07-01 00:00" in decision.message
    assert month_bounds(NOW)[1] == datetime(2025, 7, 1).timestamp()


def test_warns_once_at_80_percent(open_ledger: OpenLedger, prices: Prices) -> None:
    ledger = open_ledger()
    ledger.record(cloud(3 * QUARTER, 0, time=NOW - 60))  # $0.75 of $1.00
    budget = Budget(ledger, prices, 1.0, None)
    below = budget.check("gpt-4o", 1000, 0, now=NOW)
    crossing = budget.check("gpt-4o", QUARTER // 5, 0, now=NOW)  # $0.80 with this request
    again = budget.check("gpt-4o", QUARTER // 5, 0, now=NOW)
    assert (below.allowed, crossing.allowed, again.allowed) == (True, True, True)
    assert below.warn is None
    assert crossing.warn is not None
    assert "$0.80 of the $1.00 budget" in crossing.warn
    assert again.warn is None
    tomorrow = budget.check("gpt-4o", 7 * QUARTER // 2, 0, now=NOW + 86_400)
    assert tomorrow.warn is not None  # a new day warns again


def test_saving_rows_kept_in_memory_keeps_the_newer_outcome() -> None:
    """A row the file has too, saved from memory after the file could be written again: its outcome wins."""
    disk, memory = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    for conn in (disk, memory):
        ledger_module.migrate(conn)
        conn.execute(
            ledger_module._INSERT, ("r1", 1.0, "completion", "local", "m", 10, 2, 0, 0, None, 5.0, "ok", "", 0.0)
        )
    disk.execute("UPDATE requests SET shown = 1, language = 'python', retained_chars_30s = 7")
    memory.execute("UPDATE requests SET shown = 1, language = 'python', accepted = 1, accepted_chars = 9")
    memory.execute("UPDATE requests SET retained_chars_5m = 4, reversed = 1, context = 'code', mean_logprob = -0.25")
    disk.executemany(ledger_module._SAVE, memory.execute(f"SELECT {', '.join(COLUMNS)} FROM requests"))
    row = disk.execute(f"SELECT {', '.join(ledger_module.OUTCOMES)} FROM requests").fetchall()
    assert row == [(1, "python", 1, 9, 7, 4, 1, "code", -0.25)]
