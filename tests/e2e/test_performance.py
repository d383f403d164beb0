"""Performance plumbing end to end: the prompt evaluated ahead during the debounce, the token and stage counts."""

from __future__ import annotations

import asyncio
import threading

from lsp_server.backends import Generation, TextPrompt
from lsp_server.backends.local import LocalBackend, embedded_model_path
from lsp_server.config import Settings, cache_dir
from tests.conftest import Client
from tests.e2e.test_completion import SOURCE, complete, end_position, open_doc, status


async def test_prompt_evaluated_ahead_leaves_only_generation() -> None:
    backend = LocalBackend(Settings(), lambda: str(embedded_model_path(cache_dir())))
    await backend.start()
    try:
        evaluated: asyncio.Queue[int] = asyncio.Queue()
        backend.prefill(TextPrompt(SOURCE, 8), evaluated.put_nowait)
        tokens = await asyncio.wait_for(evaluated.get(), 120)
        report = Generation()
        async for _ in backend.stream(TextPrompt(SOURCE, 8, ("\n",)), threading.Event(), report):
            pass
        assert tokens == report.usage.prompt_tokens > 10
        assert report.usage.cached_tokens == report.usage.prompt_tokens  # nothing left to evaluate
        backend.prefill(TextPrompt(SOURCE, 8), evaluated.put_nowait)  # already in the KV cache: no work
        await asyncio.sleep(0.5)
        assert evaluated.empty()
    finally:
        backend.close()


async def test_status_counts_model_tokens_and_stage_times(client: Client, editor: str) -> None:
    open_doc(client, SOURCE)
    items = await complete(client, end_position(SOURCE, editor), invoked=False)  # typed: debounced
    assert items
    report = await status(client)
    counters, timing = report["counters"], report["lastTiming"]
    assert counters["promptTokensEvaluated"] > 10 and counters["generatedTokens"] > 0
    assert timing["model"] > 0 and timing["debounce"] >= 100
    assert timing["total"] >= timing["debounce"] + timing["model"]
