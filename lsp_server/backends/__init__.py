"""Model backends: one small protocol, one factory."""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


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
class TextPrompt:
    """A raw completion prompt; special tokens appear as text and are parsed."""

    text: str
    max_tokens: int
    stop: tuple[str, ...] = ()


@dataclass
class Generation:
    """What one streamed generation reports besides its text."""

    usage: Usage = Usage()
    first_token_s: float | None = None
    total_s: float = 0.0
    cancelled: bool = False
    mean_logprob: float | None = None
    """Mean log-probability of the generated tokens; None when the backend does not report it."""
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


class BackendError(Exception):
    """A backend cannot serve: the message is meant for the user."""


class CompletionBackend(Protocol):
    """Streams completions for raw prompts."""

    name: str
    model: str

    def stream(self, prompt: TextPrompt, cancel: threading.Event, report: Generation) -> AsyncGenerator[str, None]:
        """Yield text chunks until done, a stop string, or `cancel` is set; fill `report`."""
        ...


@runtime_checkable
class Prefills(Protocol):
    """A backend that can evaluate a prompt ahead of generating from it (its KV cache is its own)."""

    def prefill(self, prompt: TextPrompt, done: Callable[[Ahead], None]) -> None:
        """Evaluate `prompt` when idle and decode ahead; `done` hears what was done, on the caller's loop."""
        ...
