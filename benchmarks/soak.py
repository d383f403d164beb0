"""Memory: what the server holds beyond the model, and whether it grows over a 10,000-request soak.

The soak drives the full request path through a real server over LSP: 10,000 inline-completion
requests in rounds of keystrokes sent without waiting (each supersedes the one before within a
10 ms debounce; a gap halfway lets one generation start, which the rest of the round cancels), one
generation at the end of the round (8 tokens at most, so the run stays short), typed-ahead cache
hits for the characters the suggestion predicted, and requests in the middle of a line that are
skipped without the model. A generation per request would take
hours on this CPU; what could leak per request (documents, snapshots, slots, futures, ledger rows,
pygls bookkeeping) is exercised on every one of them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lsprotocol import types

from benchmarks.peer import rss_bytes
from lsp_server.tools.session import Session

ROUND = 40
"""Keystrokes sent at once in a round (they supersede each other; the last one generates)."""
TYPED_AHEAD = 4
MID_LINE = 6


@dataclass
class Soak:
    """RSS after a tenth, half and all of the requests, and what the server counted."""

    requests: int
    rss_start: int
    rss_half: int
    rss_end: int
    counters: dict[str, int]
    seconds: float


_BASELINE = """
import json, resource, sys
import llama_cpp
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
before = rss()
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=int(sys.argv[2]), flash_attn=True, n_batch=512, verbose=False)
llm.create_completion(sys.argv[3], max_tokens=16, temperature=0.0)
print(json.dumps({"python": before, "loaded": rss()}))
"""


def model_memory(model: str, context_size: int, prompt: str) -> int:
    """What llama.cpp itself holds for the model (weights touched, KV cache, compute buffers), measured
    as the RSS a bare Python process gains by loading it and generating once."""
    out = subprocess.run(
        [sys.executable, "-c", _BASELINE, model, str(-(-context_size // 256) * 256), prompt],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    sizes = json.loads(out.stdout.strip().splitlines()[-1])
    return int(sizes["loaded"]) - int(sizes["python"])


async def soak(model: str, log: Path, data: Path, opening: str, requests: int = 10_000) -> Soak:
    """Send `requests` inline-completion requests through a real server; RSS after the first tenth and at the end."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    session = Session("file:///bench/soak.py")
    other = "file:///bench/soak-mid-line.py"
    options = {"completion": {"maxTokens": 8, "debounceMs": 10}}
    await session.start({"TANDEM_MODEL": model, "TANDEM_DATA_DIR": str(data)}, log, options)
    session.open(opening)
    assert (await session.model())["state"] == "ready"
    session.client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(other, "python", 1, "value = compute(alpha, beta)\n"))
    )
    # The cursor sits before "alpha, beta)": code follows it on the line, so nothing is completed there.
    mid_line = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=other),
        position=types.Position(line=0, character=16),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
    )
    words = opening.split()
    sent = 0
    rss_start = rss_half = 0
    i = 0
    while sent < requests:
        if rss_start == 0 and sent >= requests // 10:
            rss_start = rss_bytes(session.pid)
        if rss_half == 0 and sent >= requests // 2:
            rss_half = rss_bytes(session.pid)
        burst = " ".join(words[i % len(words) : i % len(words) + 12])[: max(1, min(ROUND, requests - sent))]
        i += 12
        pending = []
        for n, char in enumerate(burst):
            pending.append(session.keystroke(char))
            # The request goes out before the next change, as an editor sends them; halfway a short gap lets
            # one generation start, and the rest of the burst cancels it.
            await asyncio.sleep(0.05 if n == len(burst) // 2 else 0)
        results = await asyncio.gather(*pending)
        sent += len(pending)
        items = results[-1].items
        if items and sent < requests:
            for char in items[0].insert_text[:TYPED_AHEAD]:
                await session.keystroke(char)
                sent += 1
        for _ in range(min(MID_LINE, requests - sent)):
            await session.client.text_document_inline_completion_async(mid_line)
            sent += 1
    counters = (await session.command("tandem.status"))["counters"]
    rss_end = rss_bytes(session.pid)
    await session.stop()
    return Soak(sent, rss_start, rss_half, rss_end, counters, loop.time() - started)
