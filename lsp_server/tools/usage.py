"""`tandem usage`: the token ledger as a table, JSON or CSV."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import datetime, timezone
from typing import Any

from lsp_server import config
from lsp_server.ledger import COLUMNS, Ledger, default_path
from lsp_server.prices import Prices

_PERIODS = (("today", "Today"), ("thisMonth", "This month"), ("allTime", "All time"))
_HEADER = ("backend", "model", "task", "requests", "prompt tokens", "output tokens", "cost")


def render_table(report: dict[str, Any]) -> str:
    """The report for a person: today, this month and all time per backend, model and task."""
    lines = [f"Token ledger {report['ledger']} (prices as of {report['pricesDate']})"]
    if report["inMemory"]:
        lines.append("The ledger file cannot be written: this session's usage is in memory only.")
    for key, title in _PERIODS:
        period = report["periods"][key]
        lines += ["", title]
        if not period["rows"]:
            lines.append("  no requests")
            continue
        cells = [list(_HEADER)]
        cells += [
            [
                row["backend"],
                row["model"],
                row["kind"],
                f"{row['requests']:,}",
                f"{row['promptTokens']:,}",
                f"{row['completionTokens']:,}",
                f"${row['costUsd']:.4f}",
            ]
            for row in period["rows"]
        ]
        cells.append(
            [
                "total",
                "",
                "",
                f"{period['requests']:,}",
                f"{period['promptTokens']:,}",
                f"{period['completionTokens']:,}",
                f"${period['costUsd']:.4f}",
            ]
        )
        lines += _grid(cells)
        lines.append(
            f"  local share {period['localShare']:.1%} of tokens; "
            f"saved ${period['savedUsd']:.4f} against {report['referenceModel']}"
        )
    if report["acceptance"]:
        lines += ["", "Accepted completions"]
        lines += [_acceptance_line(row) for row in report["acceptance"]]
    if report["unpricedModels"]:
        lines += [
            "",
            f"No price known for {', '.join(report['unpricedModels'])}: counted as $0 "
            '(set cloud.prices, e.g. {"model": {"input": 1.0, "output": 2.0}}).',
        ]
    return "\n".join(lines)


def _acceptance_line(row: dict[str, Any]) -> str:
    """One model and language: how many suggestions were taken, and how much of their text stayed."""
    language = f" ({row['language']})" if row["language"] else ""
    line = f"  {row['model']}{language}: {row['accepted']:,} of {row['shown']:,} shown ({row['rate']:.0%})"
    if row["partiallyAccepted"]:
        line += f", {row['partiallyAccepted']:,} in part"
    if row["acceptedChars"]:
        line += (
            f"; {row['acceptedChars']:,} characters accepted, {row['retainedChars30s']:,} still there"
            f" after 30 s, {row['retainedChars5m']:,} after 5 min"
        )
    if row["reversals"]:
        line += f"; {row['reversals']:,} undone at once"
    return line


def _grid(cells: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return [
        "  "
        + "  ".join(
            cell.ljust(width) if i < 3 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    ]


def main(argv: list[str]) -> int:
    """`tandem usage [--json | --csv]`; reads the ledger at config.data_dir() (TANDEM_DATA_DIR)."""
    parser = argparse.ArgumentParser(
        prog="tandem usage",
        description="Tokens, requests and cost per backend, model and task, from the ledger.",
    )
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print the totals as one JSON object")
    form.add_argument("--csv", action="store_true", help="print every request as a CSV row")
    args = parser.parse_args(argv)
    ledger = Ledger(
        default_path(config.data_dir()),
        Prices.load(),
        on_problem=lambda message: print(message, file=sys.stderr),
    )
    try:
        if args.csv:
            writer = csv.DictWriter(sys.stdout, ["utc", *COLUMNS], lineterminator="\n")
            writer.writeheader()
            for row in ledger.rows():
                utc = datetime.fromtimestamp(row["time"], timezone.utc).isoformat(timespec="seconds")
                writer.writerow({"utc": utc, **row})
        elif args.json:
            print(json.dumps(ledger.report(), indent=2))
        else:
            print(render_table(ledger.report()))
    finally:
        ledger.close()
    return 0
