"""`tandem demo`: a real LSP session on a sample file, typed the way a person types."""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lsp_server.tools.session import Session, now_ms

# What is in the file when it opens, then what the person types: (text, pause after it in seconds).
OPENING = '''"""A tiny inventory of items and their prices."""

from dataclasses import dataclass


@dataclass
class Item:
    name: str
    price: float
    quantity: int = 0


class Inventory:
    def __init__(self):
        self.items = {}

    def add(self, item):
        self.items[item.name] = item

'''
TYPING: list[tuple[str, float]] = [
    ("    def total", 1.2),
    ("_value(self):\n", 1.5),
    ('        """Return the value of everything in stock."""\n', 1.5),
    ("        return sum(", 1.5),
    ("item.price * item.quantity for item in self.items.values())\n\n", 1.2),
    ("    def remove(self, name):\n", 1.5),
    ("        ", 1.5),
]

DIM, BOLD, RESET = ("\033[2m", "\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


class _Typist:
    def __init__(self, fast: bool) -> None:
        self.session = Session("file:///demo/inventory.py", self._on_ghost_text)
        self.fast = fast
        self.rng = random.Random(7)
        self.paused_at = 0.0
        self.first_ghost: list[float] = []
        self.full: list[float] = []
        self._streamed = False

    def _on_ghost_text(self, text: str, version: int) -> None:
        if not self._streamed:
            self.first_ghost.append(now_ms() - self.paused_at)
            self._streamed = True
        lines = text.split("\n")
        print(f"{DIM}   streaming… {len(lines)} line(s), latest: {lines[-1]!r}{RESET}")

    async def burst(self, text: str, pause: float) -> None:
        print(f"\n{BOLD}typing{RESET} {text!r}")
        last = None
        for char in text:
            last = self.session.keystroke(char)
            await asyncio.sleep(0 if self.fast else self.rng.uniform(0.06, 0.16))
        self.paused_at = now_ms()
        self._streamed = False
        assert last is not None
        result = await last
        elapsed = now_ms() - self.paused_at
        items = result.items if result is not None else []
        if items:
            self.full.append(elapsed)
            if not self._streamed:
                self.first_ghost.append(elapsed)
            shown = str(items[0].insert_text).replace("\n", f"{RESET}⏎{DIM}")
            print(f"   ghost text after {elapsed:.0f} ms: {DIM}{shown}{RESET}")
        else:
            print(f"   no suggestion ({elapsed:.0f} ms)")
        await asyncio.sleep(0 if self.fast else pause)


async def _main(model: str | None, fast: bool) -> int:
    data = Path(os.environ.get("TANDEM_DATA_DIR") or tempfile.mkdtemp(prefix="tandem-demo-"))
    env = {"TANDEM_DATA_DIR": str(data), **({"TANDEM_MODEL": model} if model else {})}
    typist = _Typist(fast)
    session = typist.session
    log_path = data / "demo-server.log"
    print(f"{BOLD}tandem demo{RESET}: starting `tandem serve` (its log: {log_path})")
    started = time.perf_counter()
    await session.start(env, log_path)
    session.open(OPENING)
    status = await session.model()
    for message in session.messages:
        print(f"server says: {message}")
    if status["state"] != "ready":
        print(f"the model could not load: {status.get('error')}")
        await session.stop()
        return 1
    mode = f"FIM {status['fim']}" if status["fim"] else "prefix-only mode (no FIM tokens)"
    print(f"model {status['name']} ({status['file']}) ready after {time.perf_counter() - started:.1f} s, {mode}")
    for text, pause in TYPING:
        await typist.burst(text, pause)
    counters = (await session.command("tandem.status"))["counters"]
    usage = await session.command("tandem.usage")
    await session.stop()
    _summary(typist, counters, usage)
    return 0


def _summary(typist: _Typist, counters: dict[str, Any], usage: dict[str, Any]) -> None:
    print(f"\n{BOLD}summary{RESET}")
    print(f"  requests received  {counters['inlineRequests']}")
    print(f"  model generations  {counters['generations']} ({counters['cancelledGenerations']} cancelled)")
    print(f"  typed-ahead hits   {counters['cacheHits']}")
    if typist.first_ghost:
        print(f"  first ghost text   p50 {statistics.median(typist.first_ghost):.0f} ms after the last key")
    if typist.full:
        print(f"  full suggestion    p50 {statistics.median(typist.full):.0f} ms, max {max(typist.full):.0f} ms")
    for row in usage.get("totals", []):
        print(
            f"  tokens             {row['promptTokens']} prompt + {row['completionTokens']} completion"
            f" ({row['requests']} {row['kind']} generations, {row['backend']} {row['model']},"
            f" ${row['costUsd']:.4f})"
        )


def run(model: str | None = None, fast: bool = False) -> int:
    """Run the demo; returns the process exit code."""
    return asyncio.run(_main(model, fast))
