"""The completion tier on a shared engine: N people typing at once, each with their own `tandem serve` pointed
(`local.endpoint`) at one server on loopback, for three engines in one run:

- llama.cpp's llama-server with parallel slots (continuous batching), spoken to in its own API;
- two llama-server replicas behind nginx (`deploy/nginx.conf`, only its addresses changed), and a fault: one
  replica killed mid-run;
- the baseline: `python -m llama_cpp.server`, one slot.

    python benchmarks/fleet.py [--users 1,4,16] [--pauses 2] [--parallel 4] [--model PATH] [--markdown FILE]

Each typist opens a file of real code (a module of the standard library, one per typist in turn), and their editor
asks once where the cursor lands (as in the latency bench: the engine sees the file's prompt); then everyone types at
7-20 keys a second at once and pauses at the places people pause. What is measured, from that moment, is the time
from the end of a pause to its ghost text, the engines' CPU and what the typing cost them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a source checkout runs as is

from lsp_server.backends.local import embedded_model_path
from lsp_server.config import cache_dir
from lsp_server.tools.session import Session, now_ms
from tests.loopback import LlamaServerProcess, free_port, llama_server, llama_server_binary

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
SERVER_THREADS = 2
"""CPU threads of each engine in all (the machine has 2 cores)."""
SLOT_CONTEXT = 4096
OPENING_CHARS = 1500
"""Text already in each user's file when typing starts (about 450 tokens of prompt)."""
PAUSE_AFTER = ("(", "= ", ".", ", ", ":\n", "\n")
ANSWER_TIMEOUT_S = 120.0
"""A pause whose answer takes longer is counted as hanging."""


def _sources() -> list[str]:
    """Real code, one module per user in turn, so no two users share a prompt (nor its KV cache)."""
    import argparse as a
    import json.decoder as d
    import string as s
    import textwrap as t

    texts = [inspect.getsource(m) for m in (t, a, d, s)]
    return [text for text in texts if len(text) > OPENING_CHARS + 2000]


@dataclass
class Pause:
    """One pause of one user: when it ended (ms, `now_ms()` clock) and what came of it."""

    at: float
    first_ms: float | None = None
    """Time to the first ghost text; None: none shown."""
    full_ms: float | None = None
    """Time to the whole suggestion (the request's answer); None: no suggestion."""
    hung: bool = False


@dataclass
class User:
    """What one simulated user saw."""

    pauses: list[Pause] = field(default_factory=list)
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
    local = {"endpoint": endpoint, "endpointUser": f"typist{index}"}
    await session.start({"TANDEM_DATA_DIR": str(data), "OPENAI_API_KEY": ""}, folder / "servers.log", {"local": local})
    session.open(opening)
    if (model := await session.model())["state"] != "ready":
        raise RuntimeError(f"user {index}: the endpoint is not ready: {model}")
    await session.keystroke("")  # the editor asks once where the cursor lands, as in the latency bench
    opened = (await session.command("tandem.status"))["counters"]
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
        pause = Pause(paused_at)
        try:
            result = await asyncio.wait_for(asyncio.shield(last), ANSWER_TIMEOUT_S)
        except asyncio.TimeoutError:
            pause.hung = True
        else:
            if result.items:
                pause.full_ms = now_ms() - paused_at
                if not shown_at:
                    shown_at.append(now_ms())
            if shown_at:
                pause.first_ms = shown_at[0] - paused_at
        user.pauses.append(pause)
        paused_at = None
        await asyncio.sleep(rng.uniform(0.3, 1.0))  # reading the suggestion, or not
    counters = (await session.command("tandem.status"))["counters"]
    user.counters = {name: value - opened[name] for name, value in counters.items()}  # the typing alone
    await session.stop()
    return user


async def crowd(
    endpoint: str, users: int, pauses: int, folder: Path, during: asyncio.Future[None] | None = None
) -> tuple[list[User], float, float]:
    """`users` people typing at once against `endpoint`; their results, and the typing phase's start (ms) and
    seconds. `during` is set once typing starts."""
    go = asyncio.Event()
    ready: list[int] = []
    tasks = [asyncio.ensure_future(_user(i, endpoint, pauses, go, ready, folder)) for i in range(users)]
    while len(ready) < users:
        if failed := [t for t in tasks if t.done() and t.exception() is not None]:
            raise failed[0].exception()  # type: ignore[misc]
        await asyncio.sleep(0.05)
    started = now_ms()
    go.set()
    if during is not None:
        during.set_result(None)
    results = await asyncio.gather(*tasks)
    return list(results), started, (now_ms() - started) / 1000


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU seconds the processes have used so far (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Result:
    """One crowd on one engine."""

    users: int
    first: list[float]
    full: list[float]
    pauses: int
    seconds: float
    errors: int
    hung: int
    cpu_percent: float
    evaluated: int = 0
    """Prompt tokens the engine evaluated (not served from its cache), all users together."""
    generated: int = 0

    @property
    def rate(self) -> float:
        """Suggestions shown per second of typing, all users together."""
        return len(self.full) / self.seconds

    @classmethod
    def of(cls, results: list[User], seconds: float, cpu: float) -> Result:
        pauses = [p for user in results for p in user.pauses]
        return cls(
            users=len(results),
            first=[p.first_ms for p in pauses if p.first_ms is not None],
            full=[p.full_ms for p in pauses if p.full_ms is not None],
            pauses=len(pauses),
            seconds=seconds,
            errors=sum(user.counters.get("errors", 0) for user in results),
            hung=sum(p.hung for p in pauses),
            cpu_percent=100 * cpu / seconds,
            evaluated=sum(user.counters.get("promptTokensEvaluated", 0) for user in results),
            generated=sum(user.counters.get("generatedTokens", 0) for user in results),
        )

    def value(self) -> str:
        first = f"{_p(self.first, 0.5):.0f} / {_p(self.first, 0.95):.0f} ms" if self.first else "none shown"
        full = f"{_p(self.full, 0.5):.0f} ms" if self.full else "-"
        return (
            f"first ghost text p50 / p95 {first}; full suggestion p50 {full}; {len(self.full)} / {self.pauses}"
            f" pauses, {self.rate:.2f} suggestions/s; errors {self.errors}, hanging {self.hung};"
            f" server CPU {self.cpu_percent:.0f}%; per pause {self.evaluated / max(1, self.pauses):.0f} prompt tokens"
            f" evaluated, {self.generated / max(1, self.pauses):.0f} generated"
        )


Row = tuple[str, str, str]


class Engine:
    """A shared engine under test: its URL, its processes (for CPU), and a way to stop it."""

    def __init__(self, name: str, url: str, pids: list[int]) -> None:
        self.name = name
        self.url = url
        self.pids = pids

    def run(self, users: int, pauses: int, folder: Path) -> Result:
        """One crowd against the engine."""

        async def measured() -> tuple[list[User], float, float]:
            typing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            task = asyncio.ensure_future(crowd(self.url, users, pauses, folder, typing))
            await typing
            before = cpu_seconds(self.pids)
            results, _, seconds = await task
            return results, seconds, cpu_seconds(self.pids) - before

        return Result.of(*asyncio.run(measured()))


def _replica_args(parallel: int, threads: int) -> list[str]:
    # The settings llama.vscode recommends for a CPU (batch 1024, cache reuse), `parallel` slots of SLOT_CONTEXT each.
    return [
        *("-np", str(parallel), "-c", str(parallel * SLOT_CONTEXT), "-t", str(threads), "-tb", str(threads)),
        *("-b", "1024", "-ub", "1024", "--cache-reuse", "256", "-fa", "on"),
    ]


@contextlib.contextmanager
def replicas(binary: Path, model: Path, count: int, parallel: int, folder: Path) -> Iterator[list[LlamaServerProcess]]:
    """`count` llama-server processes sharing SERVER_THREADS threads, logging into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    threads = max(1, SERVER_THREADS // count)
    started = [
        LlamaServerProcess(binary, model, _replica_args(parallel, threads), folder / f"replica{i}.log")
        for i in range(count)
    ]
    try:
        yield [server.wait_ready() for server in started]
    finally:
        for server in started:
            server.stop()


_ACCESS = re.compile(r'user=(?P<user>\S+) upstream="(?P<upstream>[^"]*)" .* uri=(?P<uri>\S+)')


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


class Nginx:
    """nginx with deploy/nginx.conf, its upstream servers and listen address swapped for these replicas."""

    def __init__(self, upstreams: list[str], folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        conf = NGINX_CONF.read_text()
        servers = "".join(f"        server {u} max_fails=1 fail_timeout=5s;\n" for u in upstreams)
        conf = re.sub(r"(# BEGIN replicas\n).*?(\s*# END replicas)", rf"\g<1>{servers}\g<2>", conf, flags=re.S)
        conf = conf.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{self.port};")
        (folder / "nginx.conf").write_text(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).is_file():
            raise RuntimeError("the replicas' balancer, nginx, is not installed (Debian: apt install nginx-light)")
        command = [nginx, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"]
        self.process = subprocess.Popen(command, stderr=(folder / "nginx.stderr").open("ab"))
        deadline = time.monotonic() + 20
        while not _listening(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {(folder / 'nginx.stderr').read_text()[-2000:]}")
            time.sleep(0.1)

    def served_by(self) -> dict[str, list[str]]:
        """For each user, the replicas (addresses) that served their requests, in order, from nginx's access log."""
        users: dict[str, list[str]] = {}
        for line in (self.folder / "access.log").read_text().splitlines():
            match = _ACCESS.search(line)
            if match and match["uri"] in ("/completion", "/infill", "/v1/completions"):
                # "a, b": a failed and b served it
                users.setdefault(match["user"], []).append(match["upstream"].split(", ")[-1])
        return users

    def stop(self) -> None:
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _target(name: str, results: dict[int, Result], baseline: dict[int, Result]) -> dict[int, str]:
    """The issue's targets for the parallel engine, checked against this run's numbers."""
    if not name.startswith("llama-server, ") or 1 not in results or not results[1].first:
        return {}
    one = _p(results[1].first, 0.5)
    targets = {}
    for n, limit in ((4, 2.0), (16, 5.0)):
        if n in results and results[n].first:
            ratio = _p(results[n].first, 0.5) / one
            targets[n] = f"p50 ≤ {limit:g}x 1 typist: {ratio:.1f}x {'✓' if ratio <= limit else '✗'}"
    if 16 in results and 16 in baseline and baseline[16].rate > 0:
        ratio = results[16].rate / baseline[16].rate
        targets[16] = (
            targets.get(16, "") + f"; ≥ 3x baseline's suggestions/s: {ratio:.1f}x {'✓' if ratio >= 3 else '✗'}"
        )
    return targets


def fault_rows(binary: Path, model: Path, users: int, pauses: int, parallel: int, folder: Path) -> list[Row]:
    """Two replicas behind nginx; the one serving the most users is killed once everyone has typed a while."""
    folder.mkdir(parents=True, exist_ok=True)
    with replicas(binary, model, 2, parallel, folder) as servers:
        nginx = Nginx([f"127.0.0.1:{s.port}" for s in servers], folder)
        try:

            async def run() -> tuple[list[User], float, str]:
                typing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                task = asyncio.ensure_future(crowd(nginx.url, users, pauses, folder, typing))
                await typing
                await asyncio.sleep(pauses * 2.0)  # a few pauses each, then the replica with the most users dies
                homes = [order[0] for order in nginx.served_by().values()]
                victim = max(servers, key=lambda s: homes.count(f"127.0.0.1:{s.port}"))
                victim.process.kill()
                killed = now_ms()
                results, _, _ = await task
                return results, killed, f"127.0.0.1:{victim.port}"

            results, killed, dead = asyncio.run(run())
            served = nginx.served_by()
        finally:
            nginx.stop()
    # Its users: those nginx sent to the killed replica before it died.
    moved = [i for i in range(users) if served.get(f"typist{i}", [""])[0] == dead]
    back: list[float | None] = []
    for i in moved:
        # Their first pause answered after the kill: from the kill, or from the end of the pause when it came later
        # (the time they were typing is not waiting), to its ghost text.
        after = [(p.at, p.first_ms) for p in results[i].pauses if p.first_ms is not None and p.at + p.first_ms > killed]
        back.append(after[0][0] + after[0][1] - max(after[0][0], killed) if after else None)
    lost = sum(user.counters.get("errors", 0) for user in results)
    hung = sum(p.hung for user in results for p in user.pauses)
    waits = [f"{b / 1000:.1f} s" if b is not None else "never" for b in back]
    return [
        (
            f"fault: 2 replicas behind nginx, {users} typists, one replica killed mid-run",
            f"requests lost (errors) {lost}, hanging {hung}; its {len(moved)} users served again after "
            f"{', '.join(waits) or '-'} (from the kill to their next ghost text)",
            "served again ≤ 5 s, nothing hanging",
        )
    ]


def affinity(served: dict[str, list[str]]) -> str:
    """How many users nginx kept on one replica."""
    one = sum(len(set(replicas)) == 1 for replicas in served.values())
    return f"{one} / {len(served)} users always on the same replica ({sum(map(len, served.values()))} requests)"


def rows(
    model_path: str, users: tuple[int, ...] = (1, 4, 16), pauses: int = 2, parallel: int = 4, fault: bool = True
) -> list[Row]:
    """Run each crowd size against each engine, then the fault; (measure, value, target) rows."""
    model = Path(model_path)
    binary = llama_server_binary()  # built the first time (minutes)
    folder = Path(tempfile.mkdtemp(prefix="tandem-fleet-"))
    table: list[Row] = [
        (
            "fleet setup",
            f"{model.name}; each typist its own `tandem serve`, {pauses} pauses each; every engine {SERVER_THREADS}"
            f" CPU threads in all, {SLOT_CONTEXT} tokens of context per slot; logs in {folder}",
            "",
        )
    ]
    measured: dict[str, dict[int, Result]] = {}
    baseline_name = "llama_cpp.server, 1 slot (baseline)"

    def run_all(name: str, engine: Engine) -> None:
        measured[name] = {}
        for n in users:
            measured[name][n] = result = engine.run(n, pauses, folder / f"{name.split(',')[0]}-{n}")
            print(f"{name}, {n} typists: {result.value()}", file=sys.stderr, flush=True)  # a long run shows progress

    # By default a waiting request ends the running one mid-reply: right for one person, wrong for a team.
    server_args = ["--n_threads", str(SERVER_THREADS), "--interrupt_requests", "false"]
    with llama_server(model, n_ctx=SLOT_CONTEXT, args=server_args) as url:
        run_all(baseline_name, Engine(baseline_name, url, _pids_of("llama_cpp.server", url)))
    name = f"llama-server, --parallel {parallel}"
    with replicas(binary, model, 1, parallel, folder / "one") as [server]:
        run_all(name, Engine(name, server.url, [server.process.pid]))
    balanced = f"2 llama-server replicas (--parallel {parallel}) behind nginx"
    affinity_row: Row | None = None
    with replicas(binary, model, 2, parallel, folder / "two") as servers:
        nginx = Nginx([f"127.0.0.1:{s.port}" for s in servers], folder / "two")
        try:
            run_all(balanced, Engine(balanced, nginx.url, [s.process.pid for s in servers]))
            affinity_row = (
                f"{balanced}: affinity (nginx access log)",
                affinity(nginx.served_by()),
                "every user on one",
            )
        finally:
            nginx.stop()
    for name, results in measured.items():
        targets = _target(name, results, measured[baseline_name])
        table += [(f"{name}, {n} typist{'s' * (n > 1)}", r.value(), targets.get(n, "")) for n, r in results.items()]
    if affinity_row:
        table.append(affinity_row)
    for n in users if fault else ():
        if n > 1:
            table += fault_rows(binary, model, n, max(pauses, 6), parallel, folder / f"fault-{n}")
    return table


def _pids_of(module: str, url: str) -> list[int]:
    """The process running `python -m module` on `url`'s port."""
    port = url.rsplit(":", 1)[1]
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if module.encode() in argv and port.encode() in argv:
                    found.append(int(entry.name))
    return found


def markdown(table: list[Row]) -> str:
    """Rows as a Markdown table."""
    lines = ["| measure | value | target |", "|---|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in table])


def main(argv: list[str] | None = None) -> int:
    """Run the fleet benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default="1,4,16", help="crowd sizes, comma-separated")
    parser.add_argument("--pauses", type=int, default=2, help="pauses per user")
    parser.add_argument("--parallel", type=int, default=4, help="llama-server slots per replica")
    parser.add_argument("--no-fault", action="store_true", help="leave out the replica killed mid-run")
    parser.add_argument("--model", help="GGUF file the servers load (default: the embedded Gemma 3 270M)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    model = args.model or str(embedded_model_path(cache_dir()))
    started = time.perf_counter()
    crowds = tuple(int(n) for n in args.users.split(","))
    table = rows(model, crowds, args.pauses, args.parallel, fault=not args.no_fault)
    result = markdown(table)
    header = f"tandem fleet bench — {time.perf_counter() - started:.0f} s"
    print(header, result, sep="\n\n")
    if args.markdown:
        args.markdown.write_text(f"{header}\n\n{result}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
