"""`tandem bench`: three typists (~60, ~120, ~220 ms a key) replay the real text of standard library modules
through the server and, on the same schedule, against llama.cpp's llama-server at its own defaults (the peer,
asked the way llama.vscode asks it; see typists.py and peer.py), per typist and pooled, for one or more seeds;
then the same prompts through llama-cpp-python directly, a 10,000-request soak and 1, 4 and 16 users sharing
one server; print one table with each target met or missed.

    python benchmarks/run.py [--seeds 3,7] [--pauses 2] [--files 8] [--quick] [--model PATH]
                             [--markdown FILE] [--details]

`--quick` (a development run): the first seed, 4 files, one pause per typist and file, the replay only.
`--replay-only`: the typists' replay at the sizes given, without the direct, soak and fleet sections.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import statistics
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a source checkout runs as is

from benchmarks import fleet, ledger_write, peer, soak, typists
from lsp_server.backends.local import LocalBackend, embedded_model_path
from lsp_server.completion.engine import Context, Engine, Request
from lsp_server.completion.prompt import build_prompt
from lsp_server.config import Settings, cache_dir
from lsp_server.ledger import Ledger
from lsp_server.prices import Prices
from lsp_server.tools.session import now_ms

SOURCE = inspect.getsource(textwrap)  # real code for the soak and the ledger's latency, not written for this project
OPENING_CHARS = 4000  # about 1,100 tokens already in the file when typing starts


@dataclass
class Replayed:
    """One case, as each side served it."""

    case: typists.Case
    tandem: list[typists.Pause]
    peer: list[typists.Pause]


async def replay(
    cases: list[typists.Case], binary: Path, model: str, work: Path, options: dict[str, Any] | None
) -> tuple[list[Replayed], dict[str, Any], int, int, str]:
    """Each case typed into tandem then into llama-server, in turn (a load that changes meanwhile touches both);
    also tandem's status, both RSS at the end, and the peer's threads."""
    work.mkdir(parents=True, exist_ok=True)
    tandem = typists.Tandem(model, work / "server.log", work / "data", options)
    await tandem.start()
    fim = (await tandem.session.command("tandem.status"))["model"].get("fim") is not None
    other = typists.Peer(binary, model, fim, Settings(), work / "llama-server.log")
    try:
        await asyncio.to_thread(other.server.wait_ready)
        done = []
        for n, case in enumerate(cases, 1):
            done.append(Replayed(case, await tandem.case(case), await other.case(case)))
            print(f"  {n}/{len(cases)} {case.typist.name} {case.module}", file=sys.stderr, flush=True)
        peer_rss = other.server.rss_bytes()
        threads = other.threads()
    finally:
        other.server.stop()
    server_rss = await tandem.stop()
    return done, tandem.status, server_rss, peer_rss, threads


def direct(cases: list[typists.Case], model_path: str, settings: Settings) -> tuple[list[float], dict[str, float]]:
    """The same prompts through llama-cpp-python, no server: time to the first line of each pause (the file's
    opening evaluated first, as each side had it); KV reuse."""
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=model_path, n_ctx=settings.context_size, flash_attn=True, n_batch=512, verbose=False
    )
    firsts = []
    for case in cases:
        text = case.opening
        _first_line_ms(llm, build_prompt(text, len(text), None, settings.prompt_tokens).text, 1, False)
        for burst in case.bursts:
            text += burst.text
            ctx = Context.at(text, len(text), settings.multiline)
            prompt = build_prompt(text, len(text), None, settings.prompt_tokens).text
            firsts.append(_first_line_ms(llm, prompt, settings.max_tokens, ctx.multiline))
    return firsts, _kv_reuse(llm, settings)


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


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def typing_rows(replayed: list[Replayed], label: str, verdicts: bool) -> list[Row]:
    """tandem and llama-server over the same pauses: each measure per typist, then pooled; targets judged on each
    typist and pooled (CPU and generations pooled) when `verdicts`."""
    groups = [(t.name, [r for r in replayed if r.case.typist == t]) for t in typists.TYPISTS]
    groups = [(name, rs) for name, rs in groups if rs] + [("pooled", replayed)]
    rows: list[Row] = []
    for name, rs in groups:
        ours = [p for r in rs for p in r.tandem]
        theirs = [p for r in rs for p in r.peer]
        pooled = name == "pooled"
        where = f"{name}{label}"
        for measure, attr, target in (
            ("first visible ghost text", "first_ms", 0.8),
            ("first line shown whole", "line_ms", 1.0),
        ):
            a = [getattr(p, attr) for p in ours]
            b = [getattr(p, attr) for p in theirs]
            r50, r95 = _p(a, 0.5) / _p(b, 0.5), _p(a, 0.95) / _p(b, 0.95)
            goal = f"≤ {target:.1f}x at p50 {_verdict(r50 <= target)}" if verdicts else ""
            rows.append(
                (
                    f"{measure} after a pause, p50 / p95 — {where}",
                    f"{_p(a, 0.5):.0f} / {_p(a, 0.95):.0f} ms",
                    f"{_p(b, 0.5):.0f} / {_p(b, 0.95):.0f} ms",
                    f"{r50:.2f}x / {r95:.2f}x",
                    goal,
                )
            )
        cpu, peer_cpu = _mean([p.cpu_s for p in ours]), _mean([p.cpu_s for p in theirs])
        gens = _mean([p.generations for p in ours])
        rows.append(
            (
                f"server CPU seconds per pause (user + system), mean — {where}",
                f"{cpu:.2f} s",
                f"{peer_cpu:.2f} s",
                f"{cpu / peer_cpu:.2f}x",
                f"≤ 1.2x {_verdict(cpu / peer_cpu <= 1.2)}" if verdicts and pooled else "",
            )
        )
        rows.append(
            (
                f"model generations per pause — {where}",
                f"{gens:.2f}",
                "1.00",
                "",
                f"≤ 1.2 {_verdict(gens <= 1.2)}" if verdicts and pooled else "",
            )
        )
        evaluated, generated = _mean([p.evaluated for p in ours]), _mean([p.generated for p in ours])
        peer_evaluated, peer_generated = _mean([p.evaluated for p in theirs]), _mean([p.generated for p in theirs])
        rows.append(
            (
                f"tokens per pause: prompt evaluated / generated (mean) — {where}",
                f"{evaluated:.0f} / {generated:.0f}",
                f"{peer_evaluated:.0f} / {peer_generated:.0f}",
                f"{(evaluated + generated) / max(1.0, peer_evaluated + peer_generated):.2f}x",
                "",
            )
        )
        if pooled:
            ahead, used = _mean([p.ahead for p in ours]), _mean([p.ahead_used for p in ours])
            rows.append(
                (
                    f"… of tandem's generated: decoded ahead while typing / of those used (mean) — {where}",
                    f"{ahead:.1f} / {used:.1f}",
                    "",
                    "",
                    "",
                )
            )
            both = [(a.first_ms, b.first_ms) for a, b in zip(ours, theirs, strict=True) if a.shown and b.shown]
            if both:
                a, b = [x for x, _ in both], [y for _, y in both]
                rows.append(
                    (
                        f"first visible ghost text p50, only pauses where both showed some ({len(both)}) — {where}",
                        f"{_p(a, 0.5):.0f} ms",
                        f"{_p(b, 0.5):.0f} ms",
                        f"{_p(a, 0.5) / _p(b, 0.5):.2f}x",
                        "",
                    )
                )
            rows.append(
                (
                    f"pauses (with ghost text) — {where}",
                    f"{len(ours)} ({sum(p.shown for p in ours)})",
                    f"{len(theirs)} ({sum(p.shown for p in theirs)})",
                    "",
                    "",
                )
            )
    return rows


def file_table(replayed: list[Replayed]) -> str:
    """Per file, all typists: first visible ghost text and first whole line at p50, CPU per pause; each side."""
    lines = [
        "| file | pauses | first visible p50, tandem / llama-server | first line whole p50 | CPU s per pause |",
        "|---|---|---|---|---|",
    ]
    for module in dict.fromkeys(r.case.module for r in replayed):
        rs = [r for r in replayed if r.case.module == module]
        ours = [p for r in rs for p in r.tandem]
        theirs = [p for r in rs for p in r.peer]
        cells = []
        for attr in ("first_ms", "line_ms"):
            a, b = _p([getattr(p, attr) for p in ours], 0.5), _p([getattr(p, attr) for p in theirs], 0.5)
            cells.append(f"{a:.0f} / {b:.0f} ms ({a / b:.2f}x)")
        cpu, peer_cpu = _mean([p.cpu_s for p in ours]), _mean([p.cpu_s for p in theirs])
        cells.append(f"{cpu:.2f} / {peer_cpu:.2f} ({cpu / peer_cpu:.2f}x)")
        lines.append(f"| {module}.py | {len(ours)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def overhead_rows(pauses: list[typists.Pause]) -> list[Row]:
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
    pauses: list[typists.Pause],
    direct: list[float],
    kv: dict[str, float],
    status: dict[str, Any],
    ledger: dict[str, float],
    writes: dict[str, Any],
) -> list[Row]:
    """The core issue's measures: tandem against llama-cpp-python directly, KV reuse, the ledger's cost."""
    ratio = _p([p.line_ms for p in pauses], 0.5) / _p(direct, 0.5)
    kv_ratio = kv["warm"] / kv["cold"]
    counters = status["counters"]
    return [
        ("direct llama-cpp-python, same prompts (first seed), first line p50", f"{_p(direct, 0.5):.0f} ms", "", "", ""),
        ("tandem's first line shown / direct at p50", f"{ratio:.2f}x", "", "", f"≤ 1.10x {_verdict(ratio <= 1.10)}"),
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
    parser.add_argument("--seeds", default="3,7", help="positions and rhythms; the first was tuned on (default 3,7)")
    parser.add_argument("--pauses", type=int, default=2, help="pauses per typist and file (default 2)")
    parser.add_argument("--files", type=int, default=8, help=f"files, of {len(typists.MODULES)} (default 8)")
    parser.add_argument("--replay-only", action="store_true", help="the typists' replay only (no soak, no fleet)")
    parser.add_argument(
        "--quick", action="store_true", help="a development run: the first seed, 4 files, 1 pause each, replay only"
    )
    parser.add_argument("--options", type=json.loads, help="tandem's initializationOptions, as JSON")
    parser.add_argument("--model", help="GGUF file (default: the embedded Gemma 3 270M); a GPU build offloads it")
    parser.add_argument("--soak", type=int, default=10_000, help="requests in the memory soak (default 10,000)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--details", action="store_true", help="also print the per-file table and each pause")
    args = parser.parse_args(argv)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    if args.quick:
        seeds, args.files, args.pauses, args.replay_only = seeds[:1], 4, 1, True
    settings = Settings()
    model = args.model or str(embedded_model_path(cache_dir()))
    modules = typists.MODULES[: args.files]
    work = Path(tempfile.mkdtemp(prefix="tandem-bench-"))
    started = time.perf_counter()
    binary = peer.build(sys.executable)  # first run only: compiles llama-server (minutes)
    built = time.perf_counter()
    rows: list[Row] = []
    runs: list[tuple[int, list[Replayed]]] = []
    for n, seed in enumerate(seeds):
        cases = typists.plan(typists.TYPISTS, modules, args.pauses, seed)
        replayed, status, server_rss, peer_rss, threads = asyncio.run(
            replay(cases, binary, model, work / f"seed{seed}", args.options)
        )
        runs.append((seed, replayed))
        label = f", seed {seed}" + (" (tuned on)" if n == 0 and len(seeds) > 1 else "")
        rows += [(f"llama-server's settings{label}", "", threads, "", "")]
        rows += typing_rows(replayed, label, verdicts=n == len(seeds) - 1 or len(seeds) == 1)
    ours = [p for _, replayed in runs for r in replayed for p in r.tandem]
    rows += overhead_rows(ours)
    if not args.replay_only:
        first_cases = [r.case for r in runs[0][1]]
        firsts, kv = direct(first_cases, model, settings)
        ledger = asyncio.run(ledger_on_off(model, settings))
        writes = next(row for row in ledger_write.run() if row["case"].startswith("Ledger.record"))
        model_bytes = soak.model_memory(model, settings.context_size, SOURCE[:OPENING_CHARS])
        soaked = asyncio.run(soak.soak(model, work / "soak.log", work / "soak-data", SOURCE[:OPENING_CHARS], args.soak))
        rows += memory_rows(server_rss, peer_rss, model_bytes, soaked)
        rows += core_rows([p for r in runs[0][1] for p in r.tandem], firsts, kv, status, ledger, writes)
        rows += [(measure, value, "", "", target) for measure, value, target in fleet.rows(model)]
    result = table(rows)
    header = (
        f"tandem bench — 3 typists, {len(modules)} files, {args.pauses} pauses each, seeds {','.join(map(str, seeds))}"
        f", model {Path(model).name}, {time.perf_counter() - built:.0f} s"
        f" (+{built - started:.0f} s building llama-server; logs in {work})"
    )
    print(header, result, sep="\n\n")
    details = ""
    if args.details:
        for seed, replayed in runs:
            details += f"\n\nPer file, seed {seed}:\n\n{file_table(replayed)}\n\n"
            for r in replayed:
                for burst, p, o in zip(r.case.bursts, r.tandem, r.peer, strict=True):
                    details += (
                        f"{r.case.typist.name:>10} {r.case.module:<11} {p.generations} gen  first {p.first_ms:5.0f}"
                        f" line {p.line_ms:5.0f} ms  cpu {p.cpu_s:4.2f} s  tokens {p.evaluated:4d}+{p.generated:3d}"
                        f" ahead {p.ahead:3d}/{p.ahead_used:3d} | peer first {o.first_ms:5.0f} cpu {o.cpu_s:4.2f} s"
                        f" tokens {o.evaluated:4d}+{o.generated:3d} | {burst.text!r}\n"
                    )
        print(details)
    if args.markdown:
        args.markdown.write_text(f"{header}\n\n{result}\n{details}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
