"""Three typists replayed into real files not written for this project, through `tandem serve` and through
llama-server (the peer, at its own defaults, asked the way llama.vscode asks it), on the same schedule.

Each typist types the real text that follows a position drawn by the seed in each file: bursts of keys
(one every ~60, ~120 or ~220 ms, with jitter and the odd hesitation), each ending where people pause
(after `(`, `= `, `.`, `, `, a line end), then a pause of 0.6-3 s. Both sides see the same keys at the
same times; tandem hears every keystroke (a didChange and an inline request, as an editor sends them),
llama-server one request the moment typing stops (see peer.py). The CPU time of each side's server process
(user + system, from /proc) is read at the first key of every burst and 3 s after the last answer of a
file: a pause's CPU seconds run from the first key of its burst to the first key of the next one (the last:
to 3 s after its answer), so nothing the server does after an answer goes uncounted.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import peer
from lsp_server.tools.session import Session, now_ms

MODULES = (
    "textwrap",
    "shlex",
    "difflib",
    "fractions",
    "statistics",
    "calendar",
    "heapq",
    "argparse",
    "dataclasses",
    "ipaddress",
)
"""Standard library modules: real code, not written for this project."""
PAUSE_AFTER = ("(", "= ", ".", ", ", ":\n", "\n")
CONTEXT_CHARS = 2000
"""Text a position has before it, at least."""
AFTER_ANSWER_S = 3.0


@dataclass(frozen=True)
class Typist:
    """One person's rhythm: the mean gap between keys."""

    key_ms: float

    @property
    def name(self) -> str:
        return f"{self.key_ms:.0f} ms/key"

    def gaps(self, keys: int, rng: random.Random) -> list[float]:
        """Seconds before each key after the first: jittered around the mean, now and then a hesitation."""
        out = []
        for _ in range(keys - 1):
            gap = self.key_ms * rng.lognormvariate(0, 0.35) / 1.06  # lognormal mean is e^(σ²/2) ≈ 1.06
            if rng.random() < 0.08:
                gap *= rng.uniform(1.8, 3.0)  # looking for the next key
            out.append(min(gap, 550) / 1000)  # longer is a pause, not a burst
        return out


TYPISTS = (Typist(60), Typist(120), Typist(220))


@dataclass(frozen=True)
class Burst:
    text: str
    gaps: tuple[float, ...]
    pause_s: float
    """From the last key to the first key of the next burst (or to the end of the file's replay)."""


@dataclass(frozen=True)
class Case:
    """One typist typing on from one position in one file."""

    typist: Typist
    module: str
    opening: str
    bursts: tuple[Burst, ...]

    @property
    def uri(self) -> str:
        return f"file:///bench/{self.typist.key_ms:.0f}/{self.module.replace('.', '/')}.py"


def source(module: str) -> str:
    """The module's source text."""
    return inspect.getsource(importlib.import_module(module))


def plan(typists: tuple[Typist, ...], modules: tuple[str, ...], pauses: int, seed: int) -> list[Case]:
    """For each typist and file: a position drawn by the seed (at a line start, with context before it), and
    bursts typing the file's own text from there."""
    rng = random.Random(seed)
    cases = []
    for typist in typists:
        for module in modules:
            text = source(module)
            lines = [i + 1 for i, c in enumerate(text) if c == "\n" and CONTEXT_CHARS <= i < len(text) - 3000]
            start = rng.choice(lines)
            bursts: list[Burst] = []
            at = start
            while len(bursts) < pauses:
                end = at + rng.randint(8, 40)
                cuts = [text.find(mark, end) + len(mark) for mark in PAUSE_AFTER if text.find(mark, end) >= 0]
                end = min(cuts)
                keys = end - at
                bursts.append(Burst(text[at:end], tuple(typist.gaps(keys, rng)), rng.uniform(0.6, 3.0)))
                at = end
            cases.append(Case(typist, module, text[:start], tuple(bursts)))
    return cases


@dataclass
class Pause:
    """One pause, as one side served it."""

    first_ms: float
    """From the last key to the first visible ghost text (to the answer when nothing was shown)."""
    line_ms: float
    """From the last key to the suggestion's first line shown whole (to the answer when nothing was shown)."""
    full_ms: float
    """From the last key to the answer."""
    shown: bool
    cpu_s: float = 0.0
    generations: int = 1
    evaluated: int = 0
    """Prompt tokens the model evaluated (not served from its cache)."""
    generated: int = 0
    ahead: int = 0
    ahead_used: int = 0
    timing: dict[str, float] = field(default_factory=dict)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle(pid: int, quiet_s: float = 0.5, timeout_s: float = 120) -> None:
    """Wait until the process has used no CPU for `quiet_s` (the model done with what it was given)."""
    deadline = time.monotonic() + timeout_s
    before = cpu_seconds(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet_s)
        now = cpu_seconds(pid)
        if now - before < 0.02:
            return
        before = now


class _Clock:
    """CPU readings at the first key of each burst; a pause's CPU is up to the next reading."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pauses: list[Pause] = []
        self._last: float | None = None

    def read(self) -> None:
        now = cpu_seconds(self.pid)
        if self._last is not None and self.pauses:
            self.pauses[-1].cpu_s += now - self._last
        self._last = now

    def stop(self) -> None:
        self.read()
        self._last = None


async def _rest_of_pause(paused_at: float, burst: Burst, last: bool, answered_at: float) -> None:
    until = paused_at + burst.pause_s * 1000
    if last:
        until = max(until, answered_at + AFTER_ANSWER_S * 1000)
    await asyncio.sleep(max(0.0, until - now_ms()) / 1000)


class Tandem:
    """The cases typed into one `tandem serve`, every keystroke reported as an editor reports it."""

    def __init__(self, model: str, log: Path, data: Path, options: dict[str, Any] | None) -> None:
        self._seen: list[tuple[float, int, str]] = []
        self.session = Session("file:///bench/unused.py", self._on_ghost_text)
        self._args = (model, log, data, options)
        self.status: dict[str, Any] = {}

    def _on_ghost_text(self, text: str, version: int) -> None:
        self._seen.append((now_ms(), version, text))

    async def start(self) -> None:
        model, log, data, options = self._args
        await self.session.start({"TANDEM_MODEL": model, "TANDEM_DATA_DIR": str(data)}, log, options)
        self.session.open("", uri="file:///bench/unused.py")
        if (await self.session.model())["state"] != "ready":
            raise RuntimeError("tandem's model did not load")

    async def case(self, case: Case) -> list[Pause]:
        session = self.session
        session.open(case.opening, uri=case.uri)
        await session.keystroke("")  # the editor asks once where the cursor lands: the prompt is evaluated
        await idle(session.pid)
        clock = _Clock(session.pid)
        for n, burst in enumerate(case.bursts):
            before = (await session.command("tandem.status"))["counters"]
            clock.read()
            last = session.keystroke(burst.text[0])
            for char, gap in zip(burst.text[1:], burst.gaps, strict=True):
                await asyncio.sleep(gap)
                last = session.keystroke(char)
            paused_at, version = now_ms(), session.version
            self._seen.clear()
            result = await last
            answered_at = now_ms()
            items = result.items
            final = items[0].insert_text if items else ""
            pause = _seen_pause(
                [(at - paused_at, text) for at, v, text in self._seen if v == version], final, answered_at - paused_at
            )
            await _rest_of_pause(paused_at, burst, n == len(case.bursts) - 1, answered_at)
            status = await session.command("tandem.status")
            after = status["counters"]
            pause.generations = after["generations"] - before["generations"]
            pause.evaluated = after["promptTokensEvaluated"] - before["promptTokensEvaluated"]
            pause.generated = after["generatedTokens"] - before["generatedTokens"]
            pause.ahead = after["aheadTokens"] - before["aheadTokens"]
            pause.ahead_used = after["aheadTokensUsed"] - before["aheadTokensUsed"]
            if final:
                pause.timing = status["lastTiming"]
            clock.pauses.append(pause)
        clock.stop()
        self.status = await session.command("tandem.status")
        return clock.pauses

    async def stop(self) -> int:
        """Stop the server; its RSS before stopping."""
        rss = peer.rss_bytes(self.session.pid)
        await self.session.stop()
        return rss


def _seen_pause(seen: list[tuple[float, str]], final: str, full_ms: float) -> Pause:
    """First visible text and first whole line from the notifications (ms after the pause) and the answer."""
    if not final:
        return Pause(full_ms, full_ms, full_ms, False)
    line = final.split("\n", 1)[0]
    shown = [(at, text) for at, text in seen if text] + [(full_ms, final)]
    first = shown[0][0]
    whole = next(at for at, text in shown if text.split("\n", 1)[0] == line)
    return Pause(first, whole, full_ms, True)


class Peer:
    """The cases typed at llama-server: no keystroke reaches it, one request the moment typing stops."""

    def __init__(self, binary: Path, model: str, fim: bool, settings: Any, log: Path) -> None:
        self.server = peer.LlamaServer(binary, model, settings, log)
        self._fim = fim
        self._settings = settings

    def threads(self) -> str:
        """The thread counts llama-server chose, from its log."""
        return self.server.threads()

    async def case(self, case: Case) -> list[Pause]:
        s = self._settings
        text = case.opening
        path, body = peer.request_body(text, len(text), self._fim, 0, s.multiline)
        await asyncio.to_thread(peer.complete, self.server.url, path, body)  # warmed at file open
        pid = self.server.process.pid
        await idle(pid)
        clock = _Clock(pid)
        for n, burst in enumerate(case.bursts):
            clock.read()
            for gap in burst.gaps:
                await asyncio.sleep(gap)
            text += burst.text
            paused_at = now_ms()
            path, body = peer.request_body(text, len(text), self._fim, s.max_tokens, s.multiline)
            answer = await asyncio.to_thread(peer.complete, self.server.url, path, body)
            answered_at = now_ms()
            shown = bool(answer.text.strip())
            pause = Pause(answer.first_ms, answer.first_ms, answer.full_ms, shown)
            pause.evaluated, pause.generated = answer.prompt_n, answer.predicted_n
            await _rest_of_pause(paused_at, burst, n == len(case.bursts) - 1, answered_at)
            clock.pauses.append(pause)
        clock.stop()
        return clock.pauses
