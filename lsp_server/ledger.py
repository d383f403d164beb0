"""The token ledger: every request's tokens, latency, cost and outcome, in SQLite."""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import functools
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from lsp_server.prices import Prices

if TYPE_CHECKING:
    from lsp_server.backends import Generation

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

LOCAL_BACKENDS = ("local", "endpoint")
"""Backends on the user's own hardware: their tokens count as served locally."""
REFERENCE_MODEL = "gpt-4o"
"""The cloud model whose prices say what local tokens saved."""
BUSY_TIMEOUT_S = 5.0
"""How long one write waits for another process holding the ledger's write lock."""
RETRY_DISK_S = 30.0
"""How long the ledger keeps rows in memory after the file failed before it tries the file again."""

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE requests (
            request_id TEXT PRIMARY KEY,
            time REAL NOT NULL,
            task TEXT NOT NULL,
            backend TEXT NOT NULL,
            model TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            cached_tokens INTEGER NOT NULL DEFAULT 0,
            estimated INTEGER NOT NULL DEFAULT 0,
            first_token_ms REAL,
            total_ms REAL NOT NULL DEFAULT 0,
            outcome TEXT NOT NULL,
            workspace TEXT NOT NULL DEFAULT '',
            cost_usd REAL NOT NULL DEFAULT 0,
            accepted INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX requests_time ON requests (time)",
    ),
    (
        "ALTER TABLE requests ADD COLUMN language TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE requests ADD COLUMN shown INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE requests ADD COLUMN accepted_chars INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE requests ADD COLUMN retained_chars_30s INTEGER",
        "ALTER TABLE requests ADD COLUMN retained_chars_5m INTEGER",
        "ALTER TABLE requests ADD COLUMN reversed INTEGER NOT NULL DEFAULT 0",
        # Before this version every completion with outcome "ok" counted as shown.
        "UPDATE requests SET shown = 1 WHERE task = 'completion' AND outcome = 'ok'",
    ),
    (
        "ALTER TABLE requests ADD COLUMN context TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE requests ADD COLUMN mean_logprob REAL",
    ),
)
"""Schema migrations: entry i upgrades `PRAGMA user_version` i to i + 1. Append; never edit."""

COLUMNS = (
    "request_id",
    "time",
    "task",
    "backend",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "estimated",
    "first_token_ms",
    "total_ms",
    "outcome",
    "workspace",
    "cost_usd",
    "accepted",
    "language",
    "shown",
    "accepted_chars",
    "retained_chars_30s",
    "retained_chars_5m",
    "reversed",
    "context",
    "mean_logprob",
)
"""The columns `Ledger.rows` yields, in order."""
OUTCOMES = COLUMNS[14:]
"""The columns that say what became of a completion once shown (`Ledger.record_outcome`)."""
_RECORDED = COLUMNS[:14]

_INSERT = f"INSERT OR IGNORE INTO requests ({', '.join(_RECORDED)}) VALUES ({', '.join('?' * len(_RECORDED))})"
# A row saved from memory to a file that has it too: the memory's outcome is newer.
_SAVE = (
    f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    " ON CONFLICT (request_id) DO UPDATE SET "
    + ", ".join(
        f"{name} = COALESCE(excluded.{name}, {name})"
        if name.startswith("retained") or name == "mean_logprob"
        else f"{name} = max({name}, excluded.{name})"
        for name in OUTCOMES
    )
)
_OUTCOME_SUMS = """SUM(shown), SUM(accepted), SUM(accepted_chars), COALESCE(SUM(retained_chars_30s), 0),
           COALESCE(SUM(retained_chars_5m), 0), SUM(reversed)"""
_GROUPED = f"""
    SELECT backend, model, task, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),
           SUM(cached_tokens), SUM(cost_usd), {_OUTCOME_SUMS}
    FROM requests WHERE time >= ? GROUP BY backend, model, task ORDER BY backend, model, task
"""
_ACCEPTANCE = f"""
    SELECT model, language, {_OUTCOME_SUMS}, SUM(accepted = 0 AND accepted_chars > 0) FROM requests
    WHERE task = 'completion' AND shown = 1 GROUP BY model, language ORDER BY model, language
"""
_OUTCOME_FIELDS = ("shown", "accepted", "acceptedChars", "retainedChars30s", "retainedChars5m", "reversals")
"""How `tandem usage --json` names the sums of the outcome columns."""
_OUTCOMES_SEEN = """
    SELECT context, mean_logprob, accepted OR accepted_chars > 0 FROM requests
    WHERE task = 'completion' AND shown = 1 AND context != '' AND model = ? ORDER BY time DESC LIMIT ?
"""
_SPENT = "SELECT COALESCE(SUM(cost_usd), 0) FROM requests WHERE time >= ? AND backend != 'local'"
_BATCH = 500
_BUSY_RETRIES = 2
_PAGE = 1000
_CALL_TIMEOUT_S = 30.0

# SQLite primary result codes (extended codes carry them in the low byte).
_BUSY_CODES = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED
_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
# PERM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL, NOLFS, AUTH: the file cannot be used.
_STORAGE_CODES = {3, 8, 10, 13, 14, 15, 22, 23}


@dataclass(frozen=True)
class Entry:
    """One request as the ledger records it."""

    task: str
    backend: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    estimated: bool = False
    first_token_ms: float | None = None
    total_ms: float = 0.0
    outcome: str = "ok"
    workspace: str = ""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: float = field(default_factory=time.time)

    @classmethod
    def of(
        cls,
        task: str,
        backend: str,
        model: str,
        report: Generation,
        outcome: str,
        workspace: str,
        request_id: str | None = None,
    ) -> Entry:
        """The entry of one streamed generation, as its report describes it."""
        usage = report.usage
        return cls(
            task=task,
            backend=backend,
            model=model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            estimated=usage.estimated,
            first_token_ms=None if report.first_token_s is None else report.first_token_s * 1000,
            total_ms=report.total_s * 1000,
            outcome=outcome,
            workspace=workspace,
            request_id=request_id or uuid.uuid4().hex,
        )


@dataclass
class _Call(Generic[_T]):
    fn: Callable[[sqlite3.Connection], _T]
    future: Future[_T]


_Write = tuple[str, tuple[Any, ...]]
_Item = _Write | _Call[Any] | None


def default_path(data_dir: Path) -> Path:
    """Where the ledger lives inside tandem's data directory."""
    return data_dir / "ledger.sqlite3"


def day_bounds(now: float) -> tuple[float, float]:
    """Start and end (unix seconds) of the local calendar day holding `now`."""
    today = datetime.fromtimestamp(now).date()
    return _midnight(today), _midnight(today + timedelta(days=1))


def month_bounds(now: float) -> tuple[float, float]:
    """Start and end (unix seconds) of the local calendar month holding `now`."""
    first = datetime.fromtimestamp(now).date().replace(day=1)
    return _midnight(first), _midnight((first + timedelta(days=32)).replace(day=1))


def _midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day).timestamp()


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a database to the newest schema; safe when several processes open it at once."""
    if _version(conn) >= len(MIGRATIONS):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _version(conn)  # another process may have migrated while we waited
        for steps in MIGRATIONS[version:]:
            for statement in steps:
                conn.execute(statement)
        if version < len(MIGRATIONS):
            conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _kind(exc: sqlite3.Error | OSError) -> str | None:
    """busy, corrupt or storage (cannot read or write the file); None for anything else."""
    if isinstance(exc, OSError):
        return "storage"
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # Python 3.10 exceptions carry no result code
        if "locked" in str(exc):
            return "busy"
        if type(exc) is sqlite3.DatabaseError:
            return "corrupt"
        return "storage" if isinstance(exc, sqlite3.OperationalError) else None
    code &= 0xFF
    if code in _BUSY_CODES:
        return "busy"
    if code in _CORRUPT_CODES:
        return "corrupt"
    return "storage" if code in _STORAGE_CODES else None


class Ledger:
    """The token ledger of one process; several processes may share its file."""

    def __init__(self, path: Path, prices: Prices, *, on_problem: Callable[[str], None] = _log.warning) -> None:
        """Open (creating, migrating) the ledger; never raises for a bad file or a full disk.

        Each problem is reported once through on_problem (called from the writer thread; it must
        not raise) and the ledger keeps working: a corrupt file is moved aside to
        `<name>.corrupt-<timestamp>` and a new one started; if it cannot write at all, it keeps
        rows in memory and says so.
        """
        self.path = path
        self._prices = prices
        self._on_problem = on_problem
        self._reported: set[str] = set()
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        """Orders `close` against `record`: a row is queued before the writer stops, or written at once."""
        self._conn: sqlite3.Connection | None = None
        self._in_memory = False
        self._disk_failed_at = 0.0
        self._moved_aside = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="tandem-ledger", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def use_prices(self, prices: Prices) -> None:
        """Price the entries recorded from now on (and reports) with `prices`."""
        self._prices = prices

    @property
    def in_memory(self) -> bool:
        """True once the file could not be written and rows are kept in memory only."""
        return self._in_memory

    def record(self, entry: Entry) -> None:
        """Queue a row and return at once (a writer thread owns the connection); prices it here.

        After `close` the row is written at once on the caller's thread: a request that finishes
        while the server shuts down still counts.
        """
        if entry.backend == "local":
            cost = self._prices.energy_cost(entry.total_ms)
        else:
            cost = self._prices.cost(entry.model, entry.prompt_tokens, entry.completion_tokens, entry.cached_tokens)
        self._write(
            (
                _INSERT,
                (
                    entry.request_id,
                    entry.time,
                    entry.task,
                    entry.backend,
                    entry.model,
                    entry.prompt_tokens,
                    entry.completion_tokens,
                    entry.cached_tokens,
                    entry.estimated,
                    entry.first_token_ms,
                    entry.total_ms,
                    entry.outcome,
                    entry.workspace,
                    cost,
                ),
            )
        )

    def outcomes(self, model: str, most: int = 2000) -> list[tuple[str, float | None, bool]]:
        """The newest suggestions of `model` shown: (context kind, mean log-probability, any of it accepted)."""
        try:
            rows = self._call(lambda conn: conn.execute(_OUTCOMES_SEEN, (model, most)).fetchall())
        except (sqlite3.Error, OSError, TimeoutError, RuntimeError):  # closed, or a file it cannot read
            return []
        return [(kind, logprob, bool(taken)) for kind, logprob, taken in rows]

    def record_outcome(self, request_id: str, values: Mapping[str, str | int | float | None]) -> None:
        """Set `OUTCOMES` columns of a completion: shown, accepted (whole), characters accepted and retained."""
        unknown = set(values) - set(OUTCOMES)
        assert not unknown, f"not outcome columns: {unknown}"
        assignments = ", ".join(f"{name} = ?" for name in values)
        self._write((f"UPDATE requests SET {assignments} WHERE request_id = ?", (*values.values(), request_id)))

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything recorded so far is written; raises TimeoutError after `timeout`."""
        if not self._closed:
            self._call(lambda conn: None, timeout)

    def close(self) -> None:
        """Write what is queued (to the file, if it can be written again) and stop the writer thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        atexit.unregister(self.close)
        # A writer stuck behind another process's lock must not hang shutdown.
        self._thread.join(BUSY_TIMEOUT_S * (_BUSY_RETRIES + 1) + 1)
        if self._thread.is_alive():
            _log.warning("ledger writer did not finish within its timeout; rows may be lost")

    def spent_usd(self, since: float) -> float:
        """USD spent since a unix time: every row's cost but the local model's energy estimate."""
        row = self._call(lambda conn: conn.execute(_SPENT, (since,)).fetchone())
        return float(row[0])

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every recorded request, oldest first, keyed by `COLUMNS`."""
        after = 0
        while True:
            page = self._call(functools.partial(_page, after=after))
            if not page:
                return
            for _rowid, *values in page:
                yield dict(zip(COLUMNS, values, strict=True))
            after = page[-1][0]

    def report(self, now: float | None = None) -> dict[str, Any]:
        """Everything `tandem usage --json` prints.

        `totals` (all time) and each of `periods` (today, thisMonth, allTime in local time) hold
        rows of backend, model, kind (the task), requests, promptTokens, completionTokens,
        cachedTokens, costUsd and what became of the completions shown: shown, accepted (whole),
        acceptedChars, retainedChars30s, retainedChars5m, reversals. `acceptance` has the same
        per model and language of the completions shown, with partiallyAccepted and the rate accepted.
        """
        now = time.time() if now is None else now
        starts = {
            "today": day_bounds(now)[0],
            "thisMonth": month_bounds(now)[0],
            "allTime": float("-inf"),
        }

        def query(conn: sqlite3.Connection) -> tuple[dict[str, list[Any]], list[Any]]:
            grouped = {name: conn.execute(_GROUPED, (since,)).fetchall() for name, since in starts.items()}
            return grouped, conn.execute(_ACCEPTANCE).fetchall()

        grouped, acceptance = self._call(query)
        periods = {name: self._period(rows) for name, rows in grouped.items()}
        everything = periods["allTime"]
        return {
            "totals": everything["rows"],
            "periods": {
                name: {"since": None if name == "allTime" else starts[name], **period}
                for name, period in periods.items()
            },
            "localShare": everything["localShare"],
            "savedUsd": everything["savedUsd"],
            "referenceModel": REFERENCE_MODEL,
            "acceptance": [
                {
                    "model": model,
                    "language": language,
                    **dict(zip(_OUTCOME_FIELDS, sums, strict=True)),
                    "partiallyAccepted": partial,
                    "rate": sums[1] / sums[0],
                }
                for model, language, *sums, partial in acceptance
            ],
            "unpricedModels": sorted(
                {
                    row["model"]
                    for row in everything["rows"]
                    if row["backend"] == "cloud" and self._prices.price(row["model"]) is None
                }
            ),
            "pricesDate": self._prices.date,
            "ledger": str(self.path),
            "inMemory": self._in_memory,
        }

    def _period(self, grouped: list[Any]) -> dict[str, Any]:
        rows = [
            {
                "backend": backend,
                "model": model,
                "kind": task,
                "requests": requests,
                "promptTokens": prompt,
                "completionTokens": completion,
                "cachedTokens": cached,
                "costUsd": round(cost, 6),
                **dict(zip(_OUTCOME_FIELDS, outcomes, strict=True)),
            }
            for backend, model, task, requests, prompt, completion, cached, cost, *outcomes in grouped
        ]
        local = [row for row in rows if row["backend"] in LOCAL_BACKENDS]
        tokens = sum(row["promptTokens"] + row["completionTokens"] for row in rows)
        local_tokens = sum(row["promptTokens"] + row["completionTokens"] for row in local)
        # What the same tokens would have cost on the reference model, less what they did cost.
        saved = sum(
            self._prices.cost(REFERENCE_MODEL, row["promptTokens"], row["completionTokens"], row["cachedTokens"])
            - row["costUsd"]
            for row in local
        )
        return {
            "rows": rows,
            "requests": sum(row["requests"] for row in rows),
            "promptTokens": sum(row["promptTokens"] for row in rows),
            "completionTokens": sum(row["completionTokens"] for row in rows),
            "costUsd": round(sum(row["costUsd"] for row in rows), 6),
            "localShare": local_tokens / tokens if tokens else 0.0,
            "savedUsd": round(saved, 6),
        }

    def _write(self, write: _Write) -> None:
        with self._lock:
            if not self._closed:
                self._queue.put(write)
                return
        try:
            conn = self._open()
            try:
                conn.execute(*write)
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as exc:
            _log.warning("ledger %s closed and its file cannot be written (%s); a row was not recorded", self.path, exc)

    def _call(self, fn: Callable[[sqlite3.Connection], _T], timeout: float = _CALL_TIMEOUT_S) -> _T:
        """Run `fn` on the writer thread after everything queued before it."""
        future: Future[_T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the ledger {self.path} is closed")
            self._queue.put(_Call(fn, future))
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:  # not the builtin before Python 3.11
            raise TimeoutError(f"the ledger writer did not answer within {timeout} s") from None

    def _run(self) -> None:
        self._attempt(lambda conn: None)
        while True:
            batch = [self._queue.get()]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            writes: list[_Write] = []
            for item in batch:
                if isinstance(item, tuple):
                    writes.append(item)
                    continue
                self._commit(writes)
                writes = []
                if item is None:
                    if self._in_memory:
                        self._to_disk()
                    self._close_connection()
                    return
                self._serve(item)
            self._commit(writes)

    def _commit(self, writes: list[_Write]) -> None:
        if not writes:
            return
        if self._in_memory and time.monotonic() - self._disk_failed_at >= RETRY_DISK_S:
            self._to_disk()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in writes:
                    conn.execute(sql, params)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

        try:
            self._attempt(write)
        except sqlite3.Error as exc:  # only when even the in-memory ledger refuses
            self._problem("lost", f"tandem could not record {len(writes)} ledger rows: {exc}")

    def _serve(self, call: _Call[Any]) -> None:
        try:
            result = self._attempt(call.fn)
        except Exception as exc:  # handed to the caller waiting on the future
            call.future.set_exception(exc)
        else:
            call.future.set_result(result)

    def _attempt(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `op`, recovering from a busy, corrupt or unwritable file (each at most once)."""
        busy = 0
        while True:
            try:
                if self._conn is None:
                    self._conn = self._open()
                return op(self._conn)
            except (sqlite3.Error, OSError) as exc:
                kind = _kind(exc)
                if self._in_memory or kind is None:
                    raise
                if kind == "busy" and busy < _BUSY_RETRIES:
                    busy += 1
                    continue
                if kind == "corrupt" and not self._moved_aside:
                    self._close_connection()
                    self._move_aside(exc)
                else:
                    self._to_memory(exc)

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            # Nothing memory-mapped: a write to a mapped page of a file made immutable (or on a
            # file system gone read-only) kills the process with SIGBUS. WAL maps its -shm index,
            # so the ledger keeps a rollback journal, whose failed write is an error it recovers from.
            conn.execute("PRAGMA mmap_size = 0")
            try:
                conn.execute("PRAGMA journal_mode = DELETE")
            except sqlite3.OperationalError as exc:
                if _kind(exc) != "busy":
                    raise
                # An older tandem has the file open in WAL mode: it stays so until that one exits.
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _move_aside(self, cause: sqlite3.Error | OSError) -> None:
        self._moved_aside = True
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S.%f")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return  # another process sharing the file moved it first
        except OSError as exc:
            self._to_memory(exc)
            return
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
        self._problem(
            "corrupt",
            f"tandem's token ledger {self.path} could not be read ({cause}); "
            f"moved it to {aside.name} and started a new one.",
        )

    def _to_memory(self, cause: sqlite3.Error | OSError) -> None:
        memory = sqlite3.connect(":memory:", isolation_level=None)
        if self._conn is not None:
            try:
                self._conn.backup(memory)  # keep the history that can still be read
            except sqlite3.Error:
                memory.close()
                memory = sqlite3.connect(":memory:", isolation_level=None)
            self._close_connection()
        migrate(memory)
        self._conn = memory
        self._in_memory = True
        self._disk_failed_at = time.monotonic()
        self._problem(
            "memory",
            f"tandem cannot write its token ledger {self.path} ({cause}); usage is kept in memory "
            "and saved to the file once it can be written again (lost if it cannot by the time the server stops).",
        )

    def _to_disk(self) -> None:
        """Go back to the file if it can be written again, saving to it every row kept in memory."""
        assert self._conn is not None
        memory = self._conn
        self._disk_failed_at = time.monotonic()
        try:
            disk = self._open()
        except (sqlite3.Error, OSError):
            return
        try:
            disk.execute("BEGIN IMMEDIATE")
            disk.executemany(_SAVE, memory.execute(f"SELECT {', '.join(COLUMNS)} FROM requests"))
            disk.execute("COMMIT")
        except (sqlite3.Error, OSError):
            _rollback(disk)
            disk.close()
            return
        memory.close()
        self._conn = disk
        self._in_memory = False
        self._problem(
            "disk", f"tandem's token ledger {self.path} can be written again; the usage kept in memory is saved."
        )

    def _close_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _problem(self, key: str, message: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            self._on_problem(message)


def _page(conn: sqlite3.Connection, after: int) -> list[Any]:
    return conn.execute(
        f"SELECT rowid, {', '.join(COLUMNS)} FROM requests WHERE rowid > ? ORDER BY rowid LIMIT ?",
        (after, _PAGE),
    ).fetchall()
