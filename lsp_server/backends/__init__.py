"""Model backends: one small protocol (this module), one factory (`factory.py`)."""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lsp_server.completion.prompt import FimTemplate


@dataclass(frozen=True)
class Usage:
    """Tokens one request used."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens served from the KV cache instead of being evaluated."""
    estimated: bool = False
    """True when the counts were estimated rather than reported by the model."""


@dataclass(frozen=True)
class Infill:
    """A code completion's prompt in parts, for a server that lays out fill-in-the-middle with its model's own
    tokens (llama-server's `/infill`)."""

    prefix: str
    """Context and document up to the cursor."""
    suffix: str = ""
    """Document after the cursor; empty for a model that completes prefixes only."""
    extra: tuple[tuple[str, str], ...] = ()
    """Context chunks from elsewhere as (file name, text), placed before the prefix."""
    written: str = ""
    """The reply's start, already written at the cursor: a reply that broke off goes on from it."""


@dataclass(frozen=True)
class TextPrompt:
    """A raw completion prompt; special tokens appear as text and are parsed."""

    text: str
    max_tokens: int
    stop: tuple[str, ...] = ()
    infill: Infill | None = None
    """Set for code completions: the same prompt in parts."""


@dataclass(frozen=True)
class ChatPrompt:
    """Chat messages (`{"role", "content"}`); the backend renders them as its model expects."""

    messages: list[dict[str, str]]
    max_tokens: int
    stop: tuple[str, ...] = ()
    reply_start: str = ""
    """Text the reply begins with, written after the template's turn opening and not streamed: it steers a small
    model into answering rather than continuing the prompt. Backends that take messages, not text, ignore it."""


Prompt = TextPrompt | ChatPrompt
"""What a backend streams a reply to."""


@dataclass
class Generation:
    """What one streamed generation reports besides its text."""

    usage: Usage = Usage()
    first_token_s: float | None = None
    total_s: float = 0.0
    cancelled: bool = False
    mean_logprob: float | None = None
    """Mean log-probability of the generated tokens; None when the backend does not report it."""
    logprobs: list[float] = field(default_factory=list)
    """Log-probability of each token generated so far, as the backend streams them (empty when it does not
    report them)."""
    ahead_tokens: int = 0
    """Completion tokens that were decoded ahead, while the user typed, rather than for this request."""
    drafted: int = 0
    """Tokens drafted by prompt lookup and checked by the model, kept or not."""
    drafts_kept: int = 0
    """Of the drafted tokens, those the model chose too (they are among the completion tokens)."""


@dataclass(frozen=True)
class Ahead:
    """What a backend did with a prompt ahead of its generation."""

    evaluated: int
    """Prompt tokens evaluated."""
    decoded: int
    """Tokens decoded ahead (drafts kept included)."""
    drafted: int = 0
    """Tokens drafted by prompt lookup and checked, kept or not."""
    drafts_kept: int = 0
    finished: bool = False
    """Whether what was decoded ahead ended by itself (a stop string, the end of generation), not cut off."""


class BackendError(Exception):
    """A backend cannot serve: the message is meant for the user."""


class Backend(Protocol):
    """A model that streams replies: llama.cpp in this process, or an OpenAI-compatible server.

    A new backend is a module with one class like this and one line in `factory.make_backend`.
    """

    name: str
    """What the ledger calls it: local, endpoint or cloud."""
    model: str
    """The model's name, once known."""
    loads_model: bool
    """True when `start` loads a model into this process (`tandem.status` counts the loads)."""
    healthy: bool
    """False while it cannot serve: its model failed to load, or its server's last request failed."""
    last_error: str | None
    failed_at: float | None
    """`time.monotonic()` of the last failure."""

    async def start(self) -> None:
        """Load the model, or learn which model the server serves; BackendError says why it cannot serve."""
        ...

    async def template(self) -> FimTemplate | None:
        """The model's fill-in-the-middle template once started; None: it completes prefixes only."""
        ...

    def status(self) -> dict[str, object]:
        """Its state for `tandem.status`: loading, ready or error, and what serves."""
        ...

    def stream(self, prompt: Prompt, cancel: threading.Event, report: Generation) -> AsyncGenerator[str, None]:
        """Yield text chunks until done, a stop string, or `cancel` is set; fill `report`."""
        ...

    def prefill(
        self,
        prompt: TextPrompt,
        done: Callable[[Ahead], None],
        emit: Callable[[str], None] = lambda text: None,
        logprobs: list[float] | None = None,
    ) -> None:
        """Evaluate `prompt` ahead of its generation when idle and decode ahead; `emit` hears the text decoded
        ahead as it comes and `done` what was done, both on the caller's loop; each token's log-probability is
        appended to `logprobs` before its text is emitted.

        Only a backend whose KV cache is its own does anything here.
        """
        ...

    async def aclose(self) -> None:
        """Stop serving and release the model or the connections."""
        ...
