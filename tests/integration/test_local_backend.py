"""The local backend's worker on the real embedded model: a job that fails fails alone."""

from __future__ import annotations

import threading

import pytest

from lsp_server.backends import BackendError, Generation, TextPrompt
from lsp_server.backends.local import LocalBackend
from lsp_server.config import Settings
from tests.loopback import embedded_model


async def test_a_failed_job_fails_alone_and_the_next_request_is_served() -> None:
    """Before: a prompt the tokenizer cannot encode (a lone surrogate) raised out of the worker's job and ended its
    thread; that request and every later one waited forever. The server cleans client strings of lone surrogates
    on arrival (see test_transport), so no server-level message reaches this path any more: it is driven here."""
    backend = LocalBackend(Settings(context_size=512), lambda: str(embedded_model()))
    await backend.start()
    try:
        with pytest.raises(BackendError, match="local generation failed: UnicodeEncodeError"):
            async for _ in backend.stream(TextPrompt("# \udc80\ndef f(a):\n    ", 4), threading.Event(), Generation()):
                pass
        report = Generation()
        prompt = TextPrompt("def add(a, b):\n    return", 4)
        chunks = [chunk async for chunk in backend.stream(prompt, threading.Event(), report)]
        assert report.usage.completion_tokens > 0 and chunks
        assert backend.status()["errors"] == 1
    finally:
        await backend.aclose()
