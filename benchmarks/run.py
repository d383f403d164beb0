"""`tandem bench`: replay typing into a real stdlib module through the server, the same pauses against
llama.cpp's llama-server (the peer, asked the way llama.vscode asks it) and through llama-cpp-python
directly, then a 10,000-request soak and 1, 4 and 16 users sharing one server; print one table with
each target met or missed.

    python benchmarks/run.py [--pauses 16] [--model PATH] [--markdown FILE] [--details]
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

from benchmarks import fleet, ledger_write, peer, soak
from lsp_server.backends.local import LocalBackend, embedded_model_path
from lsp_server.completion.engine import Context, Engine, Request
from lsp_server.completion.prompt import build_prompt
from lsp_server.config import Settings, cache_dir
from lsp_server.ledger import Ledger
from lsp_server.prices import Prices
from lsp_server.tools.session import Session, now_ms

SOURCE = inspect.getsource(textwrap)  # real code, not written for this project
OPENING_CHARS = 4000  # about 1,100 tokens already in the file when typing starts
PAUSE_AFTER = ("(", "= ", ".", ", ", ":\n", "\n")


@dataclass
class Pause:
    """One pause in the replay: what was typed, and what each side took."""

    text: str
    first_ms: float | None = None
    """From the last keystroke to the first ghost text (a streamed line, or the answer)."""
    full_ms: float = 0.0
    """From the last keystroke to the answer of its request."""
    shown: bool = False
    generations: int = 0
    prompt_tokens: int = 0
    """Prompt tokens the model evaluated during the burst and the pause (KV-cached ones not counted)."""
    generated_tokens: int = 0
    ahead_tokens: int = 0
    """Of the generated tokens, those decoded ahead while the user typed (the model otherwise idle)."""
    ahead_used: int = 0
    """Of the tokens decoded ahead, those a generation served."""
    drafted: int = 0
    """Tokens drafted by prompt lookup and checked by the model (not among the generated unless kept)."""
    drafts_kept: int = 0
    timing: dict[str, float] = field(default_factory=dict)
    """The engine's stage times of the pause's answered request."""
    direct_first_ms: float = 0.0


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


async def replay(
    bursts: list[str], model: str, log: Path, data: Path, options: dict[str, Any] | None = None
) -> tuple[list[Pause], dict[str, Any], int]:
    """Type the bursts into the real server, the way an editor reports keystrokes; also its RSS at the end."""
    pauses: list[Pause] = []
    current: Pause | None = None
    paused_at = 0.0

    def on_ghost_text(text: str) -> None:
        if current is not None and current.first_ms is None:
            current.first_ms = now_ms() - paused_at

    session = Session("file:///bench/textwrap.py", on_ghost_text)
    await session.start({"TANDEM_MODEL": model, "TANDEM_DATA_DIR": str(data)}, log, options)
    session.open(SOURCE[:OPENING_CHARS])
    assert (await session.model())["state"] == "ready"
    rng = random.Random(1)
    for burst in bursts:
        before = (await session.command("tandem.status"))["counters"]
        last = None
        for n, char in enumerate(burst):
            if n:
                await asyncio.sleep(rng.uniform(0.05, 0.15))  # a person typing, 7-20 keys a second
            last = session.keystroke(char)
        current = Pause(burst)
        paused_at = now_ms()  # the pause starts with the last keystroke
        assert last is not None
        result = await last
        current.full_ms = now_ms() - paused_at
        current.shown = bool(result.items)
        if current.shown and current.first_ms is None:
            current.first_ms = current.full_ms
        await asyncio.sleep(0.3)  # the rest of the pause
        status = await session.command("tandem.status")
        after = status["counters"]
        if current.shown:
            current.timing = status["lastTiming"]
        current.generations = after["generations"] - before["generations"]
        current.prompt_tokens = after["promptTokensEvaluated"] - before["promptTokensEvaluated"]
        current.generated_tokens = after["generatedTokens"] - before["generatedTokens"]
        current.ahead_tokens = after["aheadTokens"] - before["aheadTokens"]
        current.ahead_used = after["aheadTokensUsed"] - before["aheadTokensUsed"]
        current.drafted = after["draftedTokens"] - before["draftedTokens"]
        current.drafts_kept = after["draftedTokensKept"] - before["draftedTokensKept"]
        pauses.append(current)
    status = await session.command("tandem.status")
    rss = peer.rss_bytes(session.pid)
    await session.stop()
    return pauses, status, rss


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
    engines = {"on": Engine(backend, settings, ledger.record), "off": Engine(backend, settings)}
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
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


Row = tuple[str, str, str, str, str]
"""measure, tandem, llama-server, tandem / llama-server, target."""


def peer_rows(pauses: list[Pause], others: list[peer.PeerPause]) -> list[Row]:
    """tandem and llama-server side by side over the same pauses."""
    first = [p.first_ms if p.first_ms is not None else p.full_ms for p in pauses]
    full = [p.full_ms for p in pauses]
    peer_first = [o.first_ms for o in others]
    peer_full = [o.full_ms for o in others]
    rows: list[Row] = []
    for name, ours, theirs, target in (
        ("first ghost text after a pause", first, peer_first, 0.8),
        ("full suggestion after a pause", full, peer_full, None),
    ):
        for q in (0.5, 0.95):
            ratio = _p(ours, q) / _p(theirs, q)
            goal = f"≤ {target:.1f}x {_verdict(ratio <= target)}" if target is not None and q == 0.5 else ""
            ours_ms, theirs_ms = f"{_p(ours, q):.0f} ms", f"{_p(theirs, q):.0f} ms"
            rows.append((f"{name}, p{round(q * 100)}", ours_ms, theirs_ms, f"{ratio:.2f}x", goal))
    prompt = statistics.mean(p.prompt_tokens for p in pauses)
    generated = statistics.mean(p.generated_tokens for p in pauses)
    ahead = statistics.mean(p.ahead_tokens for p in pauses)
    used = statistics.mean(p.ahead_used for p in pauses)
    drafted = statistics.mean(p.drafted for p in pauses)
    kept = statistics.mean(p.drafts_kept for p in pauses)
    peer_prompt = statistics.mean(o.prompt_n for o in others)
    peer_generated = statistics.mean(o.predicted_n for o in others)
    rows.append(
        (
            "model tokens per pause: prompt evaluated / generated (mean)",
            f"{prompt:.0f} / {generated:.0f}",
            f"{peer_prompt:.0f} / {peer_generated:.0f}",
            f"{(prompt + generated) / max(1.0, peer_prompt + peer_generated):.2f}x",
            "",
        )
    )
    rows.append(
        (
            "… of tandem's generated: decoded ahead while typing / of those used (mean)",
            f"{ahead:.0f} / {used:.0f}",
            "",
            "",
            "",
        )
    )
    rows.append(("tokens drafted by prompt lookup / of those kept (mean)", f"{drafted:.0f} / {kept:.0f}", "", "", ""))
    return rows


def overhead_rows(pauses: list[Pause]) -> list[Row]:
    """Time in tandem outside the model, per answered pause, as the server measures it: from reading the request
    to writing its answer, less the debounce and the model's time; the client's side is shown apart."""
    timed = [p for p in pauses if p.timing]
    total = [p.timing["server"] - p.timing["debounce"] - p.timing["model"] for p in timed]
    engine = [p.timing["total"] - p.timing["debounce"] - p.timing["model"] for p in timed]
    lsp = [p.timing["server"] - p.timing["total"] for p in timed]
    client = [p.full_ms - p.timing["server"] for p in timed]
    debounce = [p.timing["debounce"] for p in timed]
    return [
        (
            "overhead outside the model per request (in the server), p50 / p95",
            f"{_p(total, 0.5):.1f} / {_p(total, 0.95):.1f} ms",
            "",
            "",
            f"< 3 ms at p50 {_verdict(_p(total, 0.5) < 3)}",
        ),
        (
            "… of it LSP (parsing, dispatch, answer written) / engine (queueing, prompt, post-processing, ledger), p50",
            f"{_p(lsp, 0.5):.1f} / {_p(engine, 0.5):.1f} ms",
            "",
            "",
            "",
        ),
        (
            "the benchmark client's side of the round trip (pipe, its own parsing), p50",
            f"{_p(client, 0.5):.1f} ms",
            "",
            "",
            "",
        ),
        ("debounce wait before the model, p50", f"{_p(debounce, 0.5):.0f} ms", "", "", ""),
    ]


def core_rows(
    pauses: list[Pause], kv: dict[str, float], status: dict[str, Any], ledger: dict[str, float], writes: dict[str, Any]
) -> list[Row]:
    """The core issue's measures: tandem against llama-cpp-python directly, KV reuse, the ledger's cost."""
    shown = [p for p in pauses if p.first_ms is not None]
    first = [p.first_ms for p in shown if p.first_ms is not None]
    direct = [p.direct_first_ms for p in shown]
    gens = sum(p.generations for p in pauses) / len(pauses)
    ratio = statistics.median(first) / statistics.median(direct) if first else float("nan")
    kv_ratio = kv["warm"] / kv["cold"]
    counters = status["counters"]
    return [
        ("pauses replayed (suggestion shown)", f"{len(pauses)} ({len(shown)})", "", "", ""),
        ("direct llama-cpp-python, same prompts, first line p50", f"{_p(direct, 0.5):.0f} ms", "", "", ""),
        ("tandem / direct at p50", f"{ratio:.2f}x", "", "", f"≤ 1.10x {_verdict(ratio <= 1.10)}"),
        ("model generations per pause", f"{gens:.2f}", "", "", f"≤ 1.2 {_verdict(gens <= 1.2)}"),
        (
            "requests / generations / cancelled / typed-ahead hits",
            f"{counters['inlineRequests']} / {counters['generations']} / {counters['cancelledGenerations']}"
            f" / {counters['cacheHits']}",
            "",
            "",
            "",
        ),
        (
            f"time to first token, cold / warm, {kv['tokens']:.0f}-token file",
            f"{kv['cold']:.0f} / {kv['warm']:.0f} ms",
            "",
            "",
            f"warm ≤ 0.3x cold {_verdict(kv_ratio <= 0.3)}",
        ),
        (
            "ledger record() on the request path, p50 / p99",
            f"{writes['p50_us']:.1f} / {writes['p99_us']:.1f} µs",
            "",
            "",
            f"< 1 ms {_verdict(writes['p99_us'] < 1000)}",
        ),
        (
            "completion latency with the ledger on / off, p50",
            f"{ledger['on']:.0f} / {ledger['off']:.0f} ms ({ledger['on'] / ledger['off']:.2f}x)",
            "",
            "",
            "",
        ),
    ]


def memory_rows(server_rss: int, peer_rss: int, model_bytes: int, result: soak.Soak) -> list[Row]:
    """RSS beyond what llama.cpp holds for the model, and RSS before/after the soak."""
    mib = 2**20
    beyond = server_rss - model_bytes
    # The first half warms up: the document (and so the prompt's KV positions) grows, allocator arenas settle.
    growth = result.rss_end - result.rss_half
    c = result.counters
    return [
        (
            "server RSS (llama.cpp's own for the model: weights, KV cache, buffers)",
            f"{server_rss / mib:.0f} MiB ({model_bytes / mib:.0f} MiB)",
            f"{peer_rss / mib:.0f} MiB",
            "",
            "",
        ),
        ("server RSS beyond the model", f"{beyond / mib:.0f} MiB", "", "", f"< 150 MiB {_verdict(beyond < 150 * mib)}"),
        (
            f"soak: {result.requests:,} requests in {result.seconds:.0f} s, RSS after 1/10 → 1/2 → the end",
            f"{result.rss_start / mib:.0f} → {result.rss_half / mib:.0f} → {result.rss_end / mib:.0f} MiB",
            "",
            "",
            f"no growth in the 2nd half (< 5 MiB): {growth / mib:+.1f} {_verdict(growth < 5 * mib)}",
        ),
        (
            "soak: generations / cancelled / superseded / typed-ahead hits / skipped",
            f"{c['generations']} / {c['cancelledGenerations']} / {c['supersededRequests']} / {c['cacheHits']}"
            f" / {c['skippedRequests']}",
            "",
            "",
            "",
        ),
    ]


def table(rows: list[Row]) -> str:
    """The rows as one Markdown table."""
    lines = ["| measure | tandem | llama-server | tandem / llama-server | target |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pauses", type=int, default=16)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--model", help="GGUF file (default: the embedded Gemma 3 270M); a GPU build offloads it")
    parser.add_argument("--soak", type=int, default=10_000, help="requests in the memory soak (default 10,000)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--details", action="store_true", help="also print each pause")
    args = parser.parse_args(argv)
    settings = Settings()
    model = args.model or str(embedded_model_path(cache_dir()))
    bursts = plan_bursts(args.pauses, args.seed)
    work = Path(tempfile.mkdtemp(prefix="tandem-bench-"))
    started = time.perf_counter()
    binary = peer.build(sys.executable)  # first run only: compiles llama-server (minutes)
    built = time.perf_counter()
    pauses, status, server_rss = asyncio.run(replay(bursts, model, work / "server.log", work / "data"))
    fim = status["model"].get("fim") is not None
    others, peer_rss = peer.replay(
        binary, model, fim, SOURCE[:OPENING_CHARS], bursts, settings, work / "llama-server.log"
    )
    kv = direct(bursts, pauses, model, settings)
    ledger = asyncio.run(ledger_on_off(model, settings))
    writes = next(row for row in ledger_write.run() if row["case"].startswith("Ledger.record"))
    model_bytes = soak.model_memory(model, settings.context_size, SOURCE[:OPENING_CHARS])
    soaked = asyncio.run(soak.soak(model, work / "soak.log", work / "soak-data", SOURCE[:OPENING_CHARS], args.soak))
    rows = peer_rows(pauses, others) + overhead_rows(pauses) + memory_rows(server_rss, peer_rss, model_bytes, soaked)
    rows += core_rows(pauses, kv, status, ledger, writes)
    rows += [(measure, value, "", "", target) for measure, value, target in fleet.rows(model)]
    result = table(rows)
    header = (
        f"tandem bench — {len(bursts)} pauses typing into textwrap.py, model {Path(model).name}, "
        f"{time.perf_counter() - built:.0f} s (+{built - started:.0f} s building llama-server; logs in {work})"
    )
    print(header, result, sep="\n\n")
    if args.details:
        for p, o in zip(pauses, others, strict=True):
            first = "-" if p.first_ms is None else f"{p.first_ms:.0f}"
            print(
                f"{p.generations} gen  first {first:>5} ms  full {p.full_ms:5.0f} ms  tokens {p.prompt_tokens:4d}"
                f"+{p.generated_tokens:3d}  | peer first {o.first_ms:5.0f} full {o.full_ms:5.0f} tokens"
                f" {o.prompt_n:4d}+{o.predicted_n:3d}  | direct {p.direct_first_ms:5.0f} ms  {p.text!r}"
            )
    if args.markdown:
        args.markdown.write_text(f"{header}\n\n{result}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
