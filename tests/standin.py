"""A stand-in backend with a scripted reply, for tests of the plumbing around models: the engine's rules, the
application's rebuilding, the LSP layer. What a real model does is tested end to end with a real model."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncGenerator, Callable

from lsp_server.backends import Ahead, ChatPrompt, Generation, Prompt, TextPrompt, Usage
from lsp_server.completion.prompt import FimTemplate


class ScriptedBackend:
    """Streams `reply` a word per chunk, one chunk per 10 ms, honouring cancellation; remembers its prompts.
    With `logprob`, each chunk is a token of that log-probability, as the local backend reports them."""

    name = "local"
    loads_model = True

    def __init__(self, reply: str, model: str = "scripted", logprob: float | None = None, ahead: bool = False) -> None:
        self.reply = reply
        self.logprob = logprob
        self.ahead = ahead
        """Whether a prompt handed over with a budget is decoded ahead, its first line written whole."""
        self.model = model
        self.prompts: list[str] = []
        self.prefills: list[int] = []
        """The token budget of each prompt handed over to evaluate and decode ahead."""
        self.sent = 0
        """Chunks streamed so far, over all generations."""
        self.healthy = True
        self.last_error: str | None = None
        self.failed_at: float | None = None
        self.closed = False

    async def start(self) -> None:
        """Nothing to load."""

    async def template(self) -> FimTemplate | None:
        return None

    def status(self) -> dict[str, object]:
        return {"state": "closed" if self.closed else "ready", "name": self.model}

    def prefill(
        self,
        prompt: TextPrompt,
        done: Callable[[Ahead], None],
        emit: Callable[[str], None] = lambda text: None,
        logprobs: list[float] | None = None,
    ) -> None:
        """The budget is remembered; with `ahead`, the reply's first line is written, a word per token."""
        self.prefills.append(prompt.max_tokens)
        if not self.ahead or prompt.max_tokens <= 1:
            return
        words = self.reply.split("\n")[0].split(" ")

        def decode() -> None:
            for word in words:
                if logprobs is not None and self.logprob is not None:
                    logprobs.append(self.logprob)
                emit(word + " ")
            done(Ahead(evaluated=1, decoded=len(words), finished=True))

        asyncio.get_running_loop().call_soon(decode)

    async def aclose(self) -> None:
        self.closed = True

    async def stream(self, prompt: Prompt, cancel: threading.Event, report: Generation) -> AsyncGenerator[str, None]:
        text = json.dumps(prompt.messages) if isinstance(prompt, ChatPrompt) else prompt.text
        self.prompts.append(text)
        sent = 0
        try:
            for chunk in self.reply.split(" ")[: prompt.max_tokens]:
                if cancel.is_set():
                    report.cancelled = True
                    return
                await asyncio.sleep(0.01)
                sent += 1
                self.sent += 1
                if self.logprob is not None:
                    report.logprobs.append(self.logprob)
                yield chunk + " "
        finally:
            report.usage = Usage(prompt_tokens=len(text) // 4 or 1, completion_tokens=sent)
            if report.logprobs:
                report.mean_logprob = sum(report.logprobs) / len(report.logprobs)
