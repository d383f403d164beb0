"""Cost of `Ledger.record` on the request path, and how fast the writer thread drains it."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script from a checkout, the package is beside this folder rather than installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lsp_server.ledger import Entry, Ledger
from lsp_server.prices import Prices

N = 5000


def _entries() -> list[Entry]:
    return [
        Entry(
            task="completion" if i % 10 else "explain",
            backend="local" if i % 10 else "cloud",
            model="gemma-3-270m" if i % 10 else "gpt-4o",
            prompt_tokens=800,
            completion_tokens=32,
            cached_tokens=700,
            first_token_ms=120.0,
            total_ms=450.0,
        )
        for i in range(N)
    ]


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples_ns, n=100)
    return cuts[49] / 1000, cuts[98] / 1000


def run() -> list[dict[str, Any]]:
    """Record N entries into a temporary ledger; one row per measurement."""
    entries = _entries()
    baseline: list[Entry] = []
    append_ns = []
    for entry in entries:
        start = time.perf_counter_ns()
        baseline.append(entry)
        append_ns.append(time.perf_counter_ns() - start)

    with tempfile.TemporaryDirectory() as folder:
        ledger = Ledger(Path(folder) / "ledger.sqlite3", Prices.load())
        ledger.flush()  # the file is created and migrated before timing starts
        record_ns = []
        began = time.perf_counter()
        for entry in entries:
            start = time.perf_counter_ns()
            ledger.record(entry)
            record_ns.append(time.perf_counter_ns() - start)
        ledger.flush(timeout=60)
        drained_s = time.perf_counter() - began
        written = sum(1 for _ in ledger.rows())
        ledger.close()

    append_p50, append_p99 = _percentiles(append_ns)
    record_p50, record_p99 = _percentiles(record_ns)
    return [
        {
            "case": "list.append (baseline)",
            "n": N,
            "p50_us": round(append_p50, 2),
            "p99_us": round(append_p99, 2),
            "x_baseline_p50": 1.0,
            "rows_per_s": None,
        },
        {
            "case": "Ledger.record (caller thread)",
            "n": N,
            "p50_us": round(record_p50, 2),
            "p99_us": round(record_p99, 2),
            "x_baseline_p50": round(record_p50 / append_p50, 1),
            "rows_per_s": None,
        },
        {
            "case": "writer thread to disk",
            "n": written,
            "p50_us": None,
            "p99_us": None,
            "x_baseline_p50": None,
            "rows_per_s": round(written / drained_s),
        },
    ]


def main() -> None:
    """Print the measurements as a table."""
    rows = run()
    columns = list(rows[0])
    cells = [columns] + [["-" if row[c] is None else str(row[c]) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )


if __name__ == "__main__":
    main()
