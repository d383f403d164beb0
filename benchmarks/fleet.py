"""The completion tier on a shared fleet: N people typing at once, each with their own `tandem serve`
pointed (`local.endpoint`) at one `python -m llama_cpp.server` on loopback.

    python benchmarks/fleet.py [--users 1,4,16] [--pauses 2] [--model PATH] [--markdown FILE]

The server has one slot and the machine 2 cores: beyond one user, requests queue at the server,
which is what this measures (time to ghost text and throughput as the team grows).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a source checkout runs as is

from lsp_server.backends.local import embedded_model_path
from lsp_server.config import cache_dir
from lsp_server.tools.session import Session, now_ms
from tests.loopback import llama_server

SERVER_THREADS = 2
OPENING_CHARS = 1500
"""Text already in each user's file when typing starts (about 450 tokens of prompt)."""
PAUSE_AFTER = ("(", "= ", ".", ", ", ":\n", "\n")


def _sources() -> list[str]:
    """Real code, one module per user in turn, so no two users share a prompt (nor its KV cache)."""
    import argparse as a
    import json.decoder as d
    import string as s
    import textwrap as t

    texts = [inspect.getsource(m) for m in (t, a, d, s)]
    return [text for text in texts if len(text) > OPENING_CHARS + 2000]


@dataclass
class User:
    """What one simulated user saw."""

    first_ms: list[float] = field(default_factory=list)
    """Time from the end of each pause with ghost text to its first appearance."""
    pauses: int = 0
    counters: dict[str, int] = field(default_factory=dict)


def plan(source: str, nth: int, pauses: int, seed: int) -> tuple[str, list[str]]:
    """The text before the `nth` function definition, and bursts typing it that end where people pause."""
    rng = random.Random(seed)
    starts = [m.start() + 1 for m in re.finditer(r"\n(?: {4})?def ", source) if m.start() >= OPENING_CHARS]
    start = starts[nth % len(starts)]
    opening, rest = source[start - OPENING_CHARS : start], source[start:]
    bursts: list[str] = []
    start = 0
    while len(bursts) < pauses and start < len(rest):
        end = start + rng.randint(8, 30)
        cuts = [rest.find(mark, end) + len(mark) for mark in PAUSE_AFTER if rest.find(mark, end) >= 0]
        end = min(cuts) if cuts else len(rest)
        bursts.append(rest[start:end])
        start = end
    return opening, bursts


async def _user(index: int, endpoint: str, pauses: int, go: asyncio.Event, ready: list[int], folder: Path) -> User:
    """Start one editor's `tandem serve`, wait for everyone, then type and pause."""
    sources = _sources()
    source = sources[index % len(sources)]
    opening, bursts = plan(source, index // len(sources), pauses, seed=index)
    user = User()
    paused_at: float | None = None
    shown_at: list[float] = []

    def on_ghost_text(text: str, version: int) -> None:
        if paused_at is not None and not shown_at:
            shown_at.append(now_ms())

    session = Session(f"file:///fleet/user{index}.py", on_ghost_text)
    data = folder / f"user{index}"  # each developer keeps their own ledger
    await session.start(
        {"TANDEM_DATA_DIR": str(data), "OPENAI_API_KEY": ""}, folder / "servers.log", {"local": {"endpoint": endpoint}}
    )
    session.open(opening)
    if (model := await session.model())["state"] != "ready":
        raise RuntimeError(f"user {index}: the endpoint is not ready: {model}")
    ready.append(index)
    await go.wait()
    rng = random.Random(100 + index)
    for burst in bursts:
        last = None
        for char in burst:
            last = session.keystroke(char)
            await asyncio.sleep(rng.uniform(0.05, 0.15))  # 7-20 keys a second
        assert last is not None
        shown_at.clear()
        paused_at = now_ms()
        result = await last
        if result.items and not shown_at:
            shown_at.append(now_ms())
        if shown_at:
            user.first_ms.append(shown_at[0] - paused_at)
        paused_at = None
        user.pauses += 1
        await asyncio.sleep(rng.uniform(0.3, 1.0))  # reading the suggestion, or not
    user.counters = (await session.command("tandem.status"))["counters"]
    await session.stop()
    return user


async def crowd(endpoint: str, users: int, pauses: int, folder: Path) -> tuple[list[User], float]:
    """`users` people typing at once against `endpoint`; their results and the typing phase's seconds."""
    go = asyncio.Event()
    ready: list[int] = []
    tasks = [asyncio.ensure_future(_user(i, endpoint, pauses, go, ready, folder)) for i in range(users)]
    while len(ready) < users:
        if failed := [t for t in tasks if t.done() and t.exception() is not None]:
            raise failed[0].exception()  # type: ignore[misc]
        await asyncio.sleep(0.05)
    started = time.perf_counter()
    go.set()
    results = await asyncio.gather(*tasks)
    return list(results), time.perf_counter() - started


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(users: int, results: list[User], seconds: float) -> list[tuple[str, str, str]]:
    """The table rows of one crowd size."""
    first = [ms for user in results for ms in user.first_ms]
    pauses = sum(user.pauses for user in results)
    total = {k: sum(u.counters.get(k, 0) for u in results) for k in ("generations", "cancelledGenerations", "errors")}
    latency = f"{_p(first, 0.5):.0f} / {_p(first, 0.95):.0f} ms" if first else "none shown"
    who = f"fleet, {users} user{'s' if users > 1 else ''}"
    return [
        (f"{who}: first ghost text after a pause, p50 / p95", latency, ""),
        (
            f"{who}: pauses with ghost text; suggestions per second",
            f"{len(first)} / {pauses}; {len(first) / seconds:.2f}/s over {seconds:.0f} s",
            "",
        ),
        (
            f"{who}: generations / cancelled / errors",
            f"{total['generations']} / {total['cancelledGenerations']} / {total['errors']}",
            "",
        ),
    ]


def rows(model_path: str, users: tuple[int, ...] = (1, 4, 16), pauses: int = 2) -> list[tuple[str, str, str]]:
    """Run each crowd size against one shared llama_cpp.server; (measure, value, target) rows."""
    folder = Path(tempfile.mkdtemp(prefix="tandem-fleet-"))
    table = [
        (
            "fleet server (shared by every user)",
            f"llama_cpp.server, 1 slot, {SERVER_THREADS} threads, {Path(model_path).name}; "
            f"each user its own `tandem serve`, {pauses} pauses each",
            "",
        )
    ]
    # By default a waiting request ends the running one mid-reply: right for one person, wrong for a team.
    server_args = ["--n_threads", str(SERVER_THREADS), "--interrupt_requests", "false"]
    with llama_server(Path(model_path), n_ctx=4096, args=server_args) as url:
        for n in users:
            results, seconds = asyncio.run(crowd(url, n, pauses, folder))
            table += summarize(n, results, seconds)
    return table


def markdown(table: list[tuple[str, str, str]]) -> str:
    """Rows as a Markdown table."""
    lines = ["| measure | value | target |", "|---|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in table])


def main(argv: list[str] | None = None) -> int:
    """Run the fleet benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default="1,4,16", help="crowd sizes, comma-separated")
    parser.add_argument("--pauses", type=int, default=2, help="pauses per user")
    parser.add_argument("--model", help="GGUF file the server loads (default: the embedded Gemma 3 270M)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    model = args.model or str(embedded_model_path(cache_dir()))
    started = time.perf_counter()
    table = rows(model, tuple(int(n) for n in args.users.split(",")), args.pauses)
    result = markdown(table)
    header = f"tandem fleet bench — {time.perf_counter() - started:.0f} s"
    print(header, result, sep="\n\n")
    if args.markdown:
        args.markdown.write_text(f"{header}\n\n{result}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
