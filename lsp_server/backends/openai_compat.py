"""Any OpenAI-compatible HTTP endpoint: the cloud, or a team's vLLM / llama-server fleet."""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import socket
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import openai
from openai.types.chat import ChatCompletionMessageParam

from lsp_server.backends import Ahead, BackendError, ChatPrompt, Generation, Prompt, TextPrompt, Usage
from lsp_server.backends.chat_template import render_chat
from lsp_server.completion.prompt import FimTemplate, template_from_gguf
from lsp_server.context import CHARS_PER_TOKEN
from lsp_server.privacy import hide_passwords

T = TypeVar("T")

_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 8.0
_MAX_RETRY_AFTER_S = 20.0
"""A server asking for a longer wait gets an error now rather than an editor that hangs."""
_POLL_S = 0.05
LINE_MAX_TOKENS = 48
"""Most tokens asked of a server for one line: a server may go on generating after the stream is closed."""
_CANCELLED = object()


class OpenAICompatBackend:
    """Streams chat and raw completions from an OpenAI-compatible server, with retries."""

    loads_model = False
    resumes = False
    """A raw completion whose connection drops after some text is asked to go on from there (that text appended to
    its prompt): right for a team's engine behind a balancer, which sends it to a live replica; not for the cloud,
    where the prompt would be billed again."""

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None,
        api_key: str | None,
        name: str = "cloud",
        chat_api: bool = True,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        headers: Mapping[str, str] | None = None,
        key_hint: str = "check OPENAI_API_KEY",
    ) -> None:
        """`chat_api`: chat goes to `/v1/chat/completions`; False: it is sent as plain turns to `/v1/completions`.
        `headers` go with every request; `key_hint` tells the user where the key comes from."""
        self.name = name
        self.model = model
        """The model name; "" until `resolve_model` has asked the server which one it serves."""
        self.healthy = True
        """False after a failed request, until one succeeds."""
        self.last_error: str | None = None
        self.failed_at: float | None = None
        """`time.monotonic()` of the last failure."""
        self._chat_api = chat_api
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._has_key = bool(api_key)
        self._resolving = asyncio.Lock()
        self._key_hint = key_hint
        # A team's fleet usually checks no key, the cloud always does; the SDK insists on one.
        self._client = (
            openai.AsyncOpenAI(
                base_url=_with_api_path(base_url),
                api_key=api_key or "no-key",
                max_retries=0,
                timeout=timeout_s,
                default_headers=headers,
            )
            if api_key or name != "cloud"
            else None
        )
        self.base_url = hide_passwords(str(self._client.base_url) if self._client else (base_url or "the cloud"))
        """The server's address as messages and the status name it (a password in it hidden)."""

    async def start(self) -> None:
        """Learn the model the server serves when none was given."""
        await self.resolve_model()

    async def template(self) -> FimTemplate | None:
        """The FIM template the model's name implies: a server's GGUF metadata is out of reach."""
        return template_from_gguf({}, lambda token: "", await self.resolve_model())

    def status(self) -> dict[str, object]:
        """Ready once the model is known, or the last error."""
        state = "error" if not self.healthy else "ready" if self.model else "loading"
        return {"state": state, "endpoint": self.base_url, "name": self.model, "error": self.last_error}

    def prefill(
        self,
        prompt: TextPrompt,
        done: Callable[[Ahead], None],
        emit: Callable[[str], None] = lambda text: None,
        logprobs: list[float] | None = None,
    ) -> None:
        """Nothing: a server's KV cache is shared, and evaluating ahead would cost a request."""

    def stream(self, prompt: Prompt, cancel: threading.Event, report: Generation) -> AsyncGenerator[str, None]:
        """Stream a chat reply (`/v1/chat/completions`) or a raw completion (`/v1/completions`); fill `report`;
        closing it closes the HTTP stream."""
        if isinstance(prompt, ChatPrompt):
            if self._chat_api:
                return self._chat(prompt, cancel, report)
            prompt = render_chat(prompt, None)
        text = prompt
        return self._stream(
            lambda client, received: self._open_text(client, continued(text, received)),
            self._read_text,
            len(text.text),
            cancel,
            report,
            continues=self.resumes,
        )

    def _open_text(self, client: openai.AsyncOpenAI, prompt: TextPrompt) -> Awaitable[Any]:
        """Start streaming a raw completion."""
        return client.completions.create(
            model=self.model,
            prompt=prompt.text,
            max_tokens=capped_tokens(prompt),
            stop=list(prompt.stop[:4]) or None,  # the API takes at most four
            temperature=0,  # greedy, as the in-process model
            stream=True,
            stream_options={"include_usage": True},
        )

    def _read_text(self, chunk: Any) -> tuple[str, bool, Usage | None]:
        """A raw completion chunk's text, whether it ends the reply, and the usage it reports."""
        return (*_completion_text(chunk), _usage(chunk))

    def _chat(self, prompt: ChatPrompt, cancel: threading.Event, report: Generation) -> AsyncGenerator[str, None]:
        def open_stream(client: openai.AsyncOpenAI, received: str) -> Awaitable[Any]:
            return client.chat.completions.create(
                model=self.model,
                messages=cast(list[ChatCompletionMessageParam], prompt.messages),
                max_tokens=prompt.max_tokens,
                stop=list(prompt.stop[:4]) or None,
                stream=True,
                stream_options={"include_usage": True},
            )

        prompt_chars = sum(len(m.get("content", "")) for m in prompt.messages)
        return self._stream(
            open_stream, lambda chunk: (*_chat_text(chunk), _usage(chunk)), prompt_chars, cancel, report
        )

    async def resolve_model(self) -> str:
        """The model name; when none was given, the first one the server lists (`/v1/models`)."""
        async with self._resolving:  # the start and a first request ask once
            if not self.model:
                try:
                    self.model = await self._first_model()
                except BackendError as exc:
                    self.healthy, self.last_error, self.failed_at = False, str(exc), time.monotonic()
                    raise
        return self.model

    async def _first_model(self) -> str:
        if self._client is None:
            raise BackendError(f"no API key for {self.name}: set OPENAI_API_KEY")
        try:
            page = await self._client.models.list()
        except openai.APIError as exc:
            raise self._classify(exc, mid_stream=False)[0] from exc
        if not page.data:
            raise BackendError(f"{self.base_url} serves no model (its /models list is empty)")
        # llama-server and vLLM serve one model each: the one a team's endpoint means.
        return str(page.data[0].id)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        if self._client is not None:
            await self._client.close()

    async def _stream(
        self,
        open_stream: Callable[[openai.AsyncOpenAI, str], Awaitable[Any]],
        read: Callable[[Any], tuple[str, bool, Usage | None]],
        prompt_chars: int,
        cancel: threading.Event,
        report: Generation,
        continues: bool = False,
    ) -> AsyncGenerator[str, None]:
        """`open_stream(client, received)` opens the reply; `continues`: when the connection drops after some text,
        it is opened again to go on from the text received so far."""
        started = time.monotonic()
        received = before = ""
        usage: Usage | None = None
        spent = Usage()
        """What the attempts that broke off and were continued used: each counts (a replica's tokens are spent)."""
        # Once the server has the request its tokens cost money, whether or not the reply arrives.
        billable = False
        try:
            if self._client is None:
                raise BackendError(f"no API key for {self.name} model {self.model}: set OPENAI_API_KEY")
            client = self._client
            if not self.model and await _unless_cancelled(self.resolve_model(), cancel) is _CANCELLED:
                return
            attempt = 0
            while not cancel.is_set():
                stream: Any = None
                before = received
                try:
                    stream = await _unless_cancelled(open_stream(client, received), cancel)
                    billable = True
                    if stream is _CANCELLED:
                        break
                    chunks = 0
                    finished = False
                    while (chunk := await _unless_cancelled(_next(stream), cancel)) is not None:
                        if chunk is _CANCELLED:
                            break
                        chunks += 1
                        if chunks == 1:
                            self.healthy, self.last_error = True, None
                        text, done, reported = read(chunk)
                        usage = reported or usage
                        finished = finished or done
                        if text:
                            if report.first_token_s is None:
                                report.first_token_s = time.monotonic() - started
                            received += text
                            yield text
                    else:
                        if chunks == 0:
                            raise BackendError(f"empty response from {self.base_url}")
                        if not finished:
                            raise BackendError(f"the reply from {self.base_url} broke off mid-stream")
                    break
                except (openai.APIError, json.JSONDecodeError) as exc:
                    error, delay = self._classify(exc, mid_stream=bool(received))
                    dropped = isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError)
                    if (received and not (continues and dropped)) or delay is None or attempt >= self._max_retries:
                        raise error from exc
                    if received != before:  # it goes on from there: this attempt's tokens are spent
                        spent = _sum(spent, usage or _estimate(prompt_chars + len(before), received[len(before) :]))
                        usage = None
                    attempt += 1
                    if await _unless_cancelled(asyncio.sleep(delay or _backoff(attempt)), cancel) is _CANCELLED:
                        break
                finally:
                    if stream is not None and stream is not _CANCELLED:
                        await stream.close()
        except BackendError as exc:
            self.healthy, self.last_error, self.failed_at = False, str(exc), time.monotonic()
            raise
        finally:
            report.total_s = time.monotonic() - started
            report.cancelled = cancel.is_set()
            if usage is None and billable:
                usage = _estimate(prompt_chars + len(before), received[len(before) :])
            report.usage = _sum(spent, usage or Usage())

    def _classify(self, exc: Exception, *, mid_stream: bool) -> tuple[BackendError, float | None]:
        """The user's message for a failure and the wait before a retry (0: backoff, None: none)."""
        url, label = self.base_url, f"{self.name} model {self.model!r}"
        if isinstance(exc, json.JSONDecodeError):
            return BackendError(f"malformed response from {url}: a chunk is not JSON"), None
        if isinstance(exc, openai.APITimeoutError):
            what = "stalled mid-reply" if mid_stream else "did not answer"
            return BackendError(f"{url} {what} for {self._timeout_s:g} s (timeout)"), 0.0
        if isinstance(exc, openai.APIConnectionError):
            if mid_stream:
                return BackendError(f"the connection to {url} dropped mid-reply"), 0.0
            return BackendError(f"cannot connect to {url} ({_root_cause(exc)})"), 0.0
        if isinstance(exc, openai.AuthenticationError):
            what = "rejected the API key" if self._has_key else "needs an API key"
            return BackendError(f"{url} {what} (401): {self._key_hint}"), None
        if isinstance(exc, openai.PermissionDeniedError):
            return BackendError(f"the API key has no access to {label} (403)"), None
        if isinstance(exc, openai.NotFoundError):
            return BackendError(f"{label} not found at {url} (404): check the model name"), None
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status == 429 or status >= 500:
                wait = _retry_after(exc.response.headers)
                what = "rate limited the request (429)" if status == 429 else f"failed (HTTP {status})"
                if wait is not None and wait > _MAX_RETRY_AFTER_S:
                    return BackendError(f"{url} {what}; it asks to wait {wait:.0f} s"), None
                return BackendError(f"{url} {what}"), wait or 0.0
            return BackendError(f"{url} refused the request (HTTP {status}): {exc.message[:200]}"), None
        return BackendError(hide_passwords(f"{url} reported an error: {exc}")[:300]), None


def _estimate(prompt_chars: int, text: str) -> Usage:
    """The tokens of a request whose usage the server did not report, from its characters."""
    return Usage(math.ceil(prompt_chars / CHARS_PER_TOKEN), math.ceil(len(text) / CHARS_PER_TOKEN), estimated=True)


def _sum(a: Usage, b: Usage) -> Usage:
    return Usage(
        a.prompt_tokens + b.prompt_tokens,
        a.completion_tokens + b.completion_tokens,
        a.cached_tokens + b.cached_tokens,
        a.estimated or b.estimated,
    )


def continued(prompt: TextPrompt, received: str) -> TextPrompt:
    """`prompt` with the first part of its reply written after it, for the rest of the reply."""
    if not received:
        return prompt
    infill = prompt.infill and replace(prompt.infill, written=prompt.infill.written + received)
    return replace(prompt, text=prompt.text + received, infill=infill)


def capped_tokens(prompt: TextPrompt) -> int:
    """Most tokens to ask of a server for `prompt`.

    A server notices a closed stream at its next token at best (never during prompt evaluation), one behind a
    proxy that keeps the upstream open not at all: the request bounds what it can cost."""
    return min(prompt.max_tokens, LINE_MAX_TOKENS) if "\n" in prompt.stop else prompt.max_tokens


def _with_api_path(base_url: str | None) -> str | None:
    """`http://host:8080` -> `http://host:8080/v1`: every OpenAI-compatible server serves /v1."""
    if base_url is None or urlsplit(base_url).path.strip("/"):
        return base_url
    return base_url.rstrip("/") + "/v1"


async def _unless_cancelled(awaitable: Awaitable[T], cancel: threading.Event) -> T | object:
    """Await, giving up (and cancelling the work) soon after `cancel` is set."""
    task = asyncio.ensure_future(awaitable)
    try:
        while not task.done() and not cancel.is_set():
            await asyncio.wait({task}, timeout=_POLL_S)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    return _CANCELLED if task.cancelled() else task.result()


async def _next(stream: Any) -> Any:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None


def _chat_text(chunk: Any) -> tuple[str, bool]:
    choices = getattr(chunk, "choices", None) or []
    delta = getattr(choices[0], "delta", None) if choices else None
    text = getattr(delta, "content", None)
    return (text if isinstance(text, str) else ""), any(getattr(c, "finish_reason", None) for c in choices)


def _completion_text(chunk: Any) -> tuple[str, bool]:
    choices = getattr(chunk, "choices", None) or []
    text = getattr(choices[0], "text", None) if choices else None
    return (text if isinstance(text, str) else ""), any(getattr(c, "finish_reason", None) for c in choices)


def _usage(chunk: Any) -> Usage | None:
    usage = getattr(chunk, "usage", None)
    prompt, completion = (
        getattr(usage, "prompt_tokens", None),
        getattr(usage, "completion_tokens", None),
    )
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None)
    return Usage(prompt, completion, cached if isinstance(cached, int) else 0)


def _retry_after(headers: Any) -> float | None:
    """Seconds from `Retry-After-Ms` or `Retry-After` (seconds or an HTTP date)."""
    ms, value = headers.get("retry-after-ms"), headers.get("retry-after")
    try:
        if ms is not None:
            return max(0.0, float(ms) / 1000)
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (ValueError, TypeError):
        return None


def _backoff(attempt: int) -> float:
    return float(min(_MAX_BACKOFF_S, _BACKOFF_S * 2 ** (attempt - 1)))


def _root_cause(exc: BaseException) -> str:
    """Why a connection failed, in words: the SDK's own message is only "Connection error."."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "unknown host"
        exc, cause = cause, cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__
