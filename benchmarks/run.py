"""`tandem bench`: replay typing into a real stdlib module through the server, and the same
completions through llama-cpp-python directly, in one run; print a table.

    python benchmarks/run.py [--pauses 16] [--model PATH] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import random
import statistics
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a source checkout runs as is

from benchmarks import ledger_write
from lsp_server.backends.local import LocalBackend, embedded_model_path
from lsp_server.completion.engine import Context, Engine, Request
from lsp_server.completion.prompt import build_prompt
from lsp_server.config import Settings, cache_dir
from lsp_server.ledger import Ledger
from lsp_server.prices import Prices
from lsp_server.session import Session, now_ms

SOURCE = inspect.getsource(textwrap)  # real code, not written for this project
OPENING_CHARS = 4000  # about 1,100 tokens already in the file when typing starts
PAUSE_AFTER = ("(", "= ", ".", ", ", ":\n", "\n")


@dataclass
class Pause:
    """One pause in the replay: what was typed, and what each side took."""

    text: str
    first_ms: float | None = None
    full_ms: float = 0.0
    shown: bool = False
    generations: int = 0
    direct_first_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def plan_bursts(pauses: int, seed: int) -> list[str]:
    """Cut the text after the opening into bursts that end where people pause."""
    rng = random.Random(seed)
    rest = SOURCE[OPENING_CHARS:]
    bursts, start = [], 0
    while len(bursts) < pauses and start < len(rest):
        length = rng.randint(8, 40)
        end = start + length
        cuts = [rest.find(mark, end) + len(mark) for mark in PAUSE_AFTER if rest.find(mark, end) >= 0]
        end = min(cuts) if cuts else len(rest)
        bursts.append(rest[start:end])
        start = end
    return bursts


async def replay(bursts: list[str], model: str | None, log: Path) -> tuple[list[Pause], dict[str, Any]]:
    """Type the bursts into the real server, the way an editor reports keystrokes."""
    pauses: list[Pause] = []
    current: Pause | None = None
    paused_at = 0.0

    def on_ghost_text(text: str) -> None:
        if current is not None and current.first_ms is None:
            current.first_ms = now_ms() - paused_at

    session = Session("file:///bench/textwrap.py", on_ghost_text)
    await session.start({"TANDEM_MODEL": model} if model else {}, log)
    session.open(SOURCE[:OPENING_CHARS])
    assert (await session.model())["state"] == "ready"
    rng = random.Random(1)
    for burst in bursts:
        before = (await session.command("tandem.status"))["counters"]["generations"]
        last = None
        for char in burst:
            last = session.keystroke(char)
            await asyncio.sleep(rng.uniform(0.05, 0.15))  # a person typing, 7-20 keys a second
        current = Pause(burst)
        paused_at = now_ms()
        assert last is not None
        result = await last
        current.full_ms = now_ms() - paused_at
        current.shown = bool(result.items)
        if current.shown and current.first_ms is None:
            current.first_ms = current.full_ms
        await asyncio.sleep(0.3)  # the rest of the pause
        current.generations = (await session.command("tandem.status"))["counters"]["generations"] - before
        pauses.append(current)
    status = await session.command("tandem.status")
    await session.stop()
    return pauses, status


def direct(bursts: list[str], pauses: list[Pause], model_path: str, settings: Settings) -> dict[str, float]:
    """The same prompts through llama-cpp-python, no server: time to the first line; KV reuse."""
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=model_path, n_ctx=settings.context_size, flash_attn=True, n_batch=512, verbose=False
    )
    text = SOURCE[:OPENING_CHARS]
    for burst, pause in zip(bursts, pauses, strict=True):
        text += burst
        ctx = Context.at(text, len(text), settings.multiline)
        prompt = build_prompt(text, len(text), None, settings.prompt_tokens).text
        pause.direct_first_ms = _first_line_ms(llm, prompt, settings.max_tokens, ctx.multiline)
    return _kv_reuse(llm, settings)


def _first_line_ms(llm: Any, prompt: str, max_tokens: int, multiline: bool) -> float:
    import llama_cpp

    started = now_ms()
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    out = ""
    for n, token in enumerate(llm.generate(tokens, temp=0.0, repeat_penalty=1.0, top_k=1)):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token) or n >= max_tokens:
            break
        out += llm.detokenize([token], prev_tokens=tokens).decode("utf-8", "replace")
        if "\n" in out.lstrip("\n") or (not multiline and "\n" in out):
            break
    return now_ms() - started


def _kv_reuse(llm: Any, settings: Settings) -> dict[str, float]:
    """Time to first token on a ~1,000-token file: cold (empty cache) vs warm (one key typed)."""
    base = SOURCE[:3600]
    prompt = build_prompt(base, len(base), None, settings.prompt_tokens).text
    cold, warm = [], []
    for i in range(3):
        llm.reset()
        cold.append(_ttft(llm, prompt))
        warm.append(_ttft(llm, prompt + "abcdefgh"[i]))
    return {
        "tokens": len(llm.tokenize(prompt.encode(), add_bos=True, special=True)),
        "cold": statistics.median(cold),
        "warm": statistics.median(warm),
    }


def _ttft(llm: Any, prompt: str) -> float:
    started = now_ms()
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    next(iter(llm.generate(tokens, temp=0.0, top_k=1)))
    return now_ms() - started


async def ledger_on_off(model_path: str, settings: Settings, pairs: int = 8) -> dict[str, float]:
    """Completion latency through the engine with the ledger recording vs not, interleaved in one run."""
    backend = LocalBackend(settings, lambda: model_path)
    await backend.start()
    folder = Path(tempfile.mkdtemp(prefix="tandem-bench-ledger-"))
    ledger = Ledger(folder / "ledger.sqlite3", Prices.load())

    async def template() -> None:
        return None

    engines = {"on": Engine(backend, settings, template, ledger.record), "off": Engine(backend, settings, template)}
    times: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(pairs):
        text = SOURCE[: OPENING_CHARS + 150 * i]
        for mode in ("on", "off") if i % 2 else ("off", "on"):  # alternate who goes first (KV reuse)
            started = now_ms()
            await engines[mode].complete(Request(f"file:///{mode}/{i}", text, len(text), invoked=True))
            times[mode].append(now_ms() - started)
    ledger.close()
    backend.close()
    return {mode: statistics.median(values) for mode, values in times.items()}


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def table(
    pauses: list[Pause], kv: dict[str, float], status: dict[str, Any], ledger: dict[str, float], writes: dict[str, Any]
) -> str:
    """The results as a Markdown table, each target marked met or missed."""
    shown = [p for p in pauses if p.first_ms is not None]
    first = [p.first_ms for p in shown if p.first_ms is not None]
    direct = [p.direct_first_ms for p in shown]
    gens = sum(p.generations for p in pauses) / len(pauses)
    ratio = statistics.median(first) / statistics.median(direct) if first else float("nan")
    kv_ratio = kv["warm"] / kv["cold"]
    counters = status["counters"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    rows = [
        ("pauses replayed (suggestion shown)", f"{len(pauses)} ({len(shown)})", ""),
        ("first ghost text after a pause, p50 / p95", f"{_p(first, 0.5):.0f} / {_p(first, 0.95):.0f} ms", ""),
        ("direct llama-cpp-python, same prompts, p50 / p95", f"{_p(direct, 0.5):.0f} / {_p(direct, 0.95):.0f} ms", ""),
        ("tandem / direct at p50", f"{ratio:.2f}x", f"≤ 1.10x {verdict(ratio <= 1.10)}"),
        ("full suggestion, p50", f"{_p([p.full_ms for p in pauses], 0.5):.0f} ms", ""),
        ("model generations per pause", f"{gens:.2f}", f"≤ 1.2 {verdict(gens <= 1.2)}"),
        (
            "requests / generations / cancelled / typed-ahead hits",
            f"{counters['inlineRequests']} / {counters['generations']} / {counters['cancelledGenerations']}"
            f" / {counters['cacheHits']}",
            "",
        ),
        (f"time to first token, cold, {kv['tokens']:.0f}-token file", f"{kv['cold']:.0f} ms", ""),
        ("time to first token, warm (KV reused)", f"{kv['warm']:.0f} ms", ""),
        ("warm / cold", f"{kv_ratio:.2f}x", f"≤ 0.3x {verdict(kv_ratio <= 0.3)}"),
        (
            "ledger record() on the request path, p50 / p99",
            f"{writes['p50_us']:.1f} / {writes['p99_us']:.1f} µs",
            f"< 1 ms {verdict(writes['p99_us'] < 1000)}",
        ),
        (
            "completion latency with the ledger on / off, p50",
            f"{ledger['on']:.0f} / {ledger['off']:.0f} ms ({ledger['on'] / ledger['off']:.2f}x)",
            "",
        ),
    ]
    lines = ["| measure | value | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pauses", type=int, default=16)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--model", help="GGUF file (default: the embedded Gemma 3 270M)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--details", action="store_true", help="also print each pause")
    args = parser.parse_args(argv)
    settings = Settings()
    model = args.model or str(embedded_model_path(cache_dir()))
    bursts = plan_bursts(args.pauses, args.seed)
    log = Path(tempfile.mkdtemp(prefix="tandem-bench-")) / "server.log"
    started = time.perf_counter()
    pauses, status = asyncio.run(replay(bursts, model, log))
    kv = direct(bursts, pauses, model, settings)
    ledger = asyncio.run(ledger_on_off(model, settings))
    writes = next(row for row in ledger_write.run() if row["case"].startswith("Ledger.record"))
    result = table(pauses, kv, status, ledger, writes)
    header = (
        f"tandem bench — {len(bursts)} pauses typing into textwrap.py, model {Path(model).name}, "
        f"{time.perf_counter() - started:.0f} s (server log: {log})"
    )
    print(header, result, sep="\n\n")
    if args.details:
        for p in pauses:
            first = "-" if p.first_ms is None else f"{p.first_ms:.0f}"
            print(
                f"{p.generations} gen  first {first:>5} ms  full {p.full_ms:5.0f} ms"
                f"  direct {p.direct_first_ms:5.0f} ms  {p.text!r}"
            )
    if args.markdown:
        args.markdown.write_text(f"{header}\n\n{result}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
