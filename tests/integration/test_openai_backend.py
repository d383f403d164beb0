"""OpenAICompatBackend against the real llama.cpp server, through a fault-injecting proxy."""

from __future__ import annotations

import logging
import math
import threading
import time

import pytest
from loopback import Fault, FaultProxy, free_port

from lsp_server.backends import BackendError, ChatPrompt, Generation, TextPrompt, Usage
from lsp_server.backends.endpoint import EndpointBackend
from lsp_server.backends.openai_compat import OpenAICompatBackend
from lsp_server.context import CHARS_PER_TOKEN

KEY = "sk-test-4f9a2b7c1d8e6f3a5b0c9d2e7f1a4b8c"
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Write one sentence about the sea."},
]


def backend(url: str, **kwargs: object) -> OpenAICompatBackend:
    options: dict[str, object] = {"max_retries": 0, "timeout_s": 30.0} | kwargs
    return OpenAICompatBackend(model="tandem-test", base_url=url, api_key=KEY, **options)  # type: ignore[arg-type]


async def chat(
    b: OpenAICompatBackend, max_tokens: int = 12, cancel: threading.Event | None = None
) -> tuple[str, Generation]:
    report = Generation()
    chunks = [c async for c in b.stream(ChatPrompt(MESSAGES, max_tokens), cancel or threading.Event(), report)]
    return "".join(chunks), report


async def test_chat_streams_with_usage_from_the_server(proxy: FaultProxy) -> None:
    b = backend(proxy.url)
    text, report = await chat(b, max_tokens=12)
    assert text.strip()
    assert proxy.state.usage is not None
    assert report.usage.prompt_tokens == proxy.state.usage["prompt_tokens"] > 0
    assert report.usage.completion_tokens == proxy.state.usage["completion_tokens"]
    assert 0 < report.usage.completion_tokens <= 12
    assert not report.usage.estimated and not report.cancelled
    assert report.first_token_s is not None and 0 < report.first_token_s <= report.total_s
    request = proxy.state.seen[0]
    assert request.path == "/v1/chat/completions"
    assert request.body["max_tokens"] == 12
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.authorization == f"Bearer {KEY}"
    assert b.healthy and b.last_error is None


async def test_completions_stream_for_a_local_endpoint(proxy: FaultProxy) -> None:
    root = proxy.url.removesuffix("/v1")  # as users often write it: /v1 is implied
    b = OpenAICompatBackend(model="fleet", base_url=root, api_key=None, name="endpoint")
    report = Generation()
    prompt = TextPrompt("def add(a, b):\n", max_tokens=8, stop=("\n\n",))
    text = "".join([c async for c in b.stream(prompt, threading.Event(), report)])
    assert text
    request = proxy.state.seen[0]
    assert request.path == "/v1/completions"
    assert request.body["max_tokens"] == 8 and request.body["stop"] == ["\n\n"]
    assert proxy.state.usage is not None
    assert report.usage.completion_tokens == proxy.state.usage["completion_tokens"] <= 8


async def test_a_stream_without_usage_is_estimated(proxy: FaultProxy) -> None:
    proxy.reset(Fault("no_usage"))
    text, report = await chat(backend(proxy.url), max_tokens=10)
    assert text.strip()
    assert proxy.state.usage is None
    assert report.usage.estimated
    assert report.usage.completion_tokens == math.ceil(len(text) / CHARS_PER_TOKEN)
    prompt_chars = sum(len(m["content"]) for m in MESSAGES)
    assert report.usage.prompt_tokens == math.ceil(prompt_chars / CHARS_PER_TOKEN)


@pytest.mark.parametrize(
    ("fault", "options", "expected", "requests"),
    [
        pytest.param(Fault("401"), {}, "rejected the API key (401)", 1, id="bad-key"),
        pytest.param(Fault("403"), {}, "no access to cloud model 'tandem-test' (403)", 1, id="no-access"),
        pytest.param(Fault("404"), {}, "model 'tandem-test' not found", 1, id="unknown-model"),
        pytest.param(Fault("malformed"), {}, "malformed response", 1, id="malformed-json"),
        pytest.param(Fault("empty"), {}, "empty response", 1, id="empty-body"),
        pytest.param(
            Fault("429", retry_after="3600"),
            {"max_retries": 3},
            "asks to wait 3600 s",
            1,
            id="rate-limited-too-long",
        ),
        pytest.param(Fault("500"), {"max_retries": 1}, "failed (HTTP 500)", 2, id="server-error-persists"),
        pytest.param(Fault("stall_open"), {"timeout_s": 1.0}, "did not answer for 1 s", 1, id="timeout"),
    ],
)
async def test_failures_give_a_clear_error(
    proxy: FaultProxy,
    fault: Fault,
    options: dict[str, object],
    expected: str,
    requests: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    proxy.reset(fault)
    b = backend(proxy.url, **options)
    report = Generation()
    with pytest.raises(BackendError) as info:
        await anext(b.stream(ChatPrompt(MESSAGES, 12), threading.Event(), report))
    message = str(info.value)
    # A refused request costs nothing; one the server accepted is estimated (it may be billed).
    accepted = fault.kind in ("malformed", "empty")
    assert report.usage.estimated == accepted and (report.usage == Usage()) != accepted
    assert expected in message
    assert KEY not in message and KEY not in caplog.text
    assert len(proxy.state.seen) == requests
    assert not b.healthy and b.last_error == message


async def test_connection_refused_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    b = backend(url)
    with pytest.raises(BackendError, match="connection refused") as info:
        await chat(b)
    assert url in str(info.value)
    assert b.last_error == str(info.value)


async def test_no_key_for_the_cloud() -> None:
    b = OpenAICompatBackend(model="gpt-4o", base_url="http://127.0.0.1:9/v1", api_key=None)
    with pytest.raises(BackendError, match="set OPENAI_API_KEY"):
        await chat(b)


@pytest.mark.parametrize(
    ("fault", "min_wait_s"),
    [
        pytest.param(Fault("429", times=1, retry_after="1"), 1.0, id="429-retry-after"),
        pytest.param(Fault("500", times=1), 0.5, id="500-backoff"),
        pytest.param(Fault("drop", times=1, after_events=0), 0.5, id="dropped-before-text"),
    ],
)
async def test_retries_before_text_then_succeeds(proxy: FaultProxy, fault: Fault, min_wait_s: float) -> None:
    proxy.reset(fault)
    b = backend(proxy.url, max_retries=2)
    text, report = await chat(b)
    assert text.strip()
    first, second = proxy.state.seen
    assert second.at - first.at >= min_wait_s
    assert not report.usage.estimated
    assert b.healthy


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        pytest.param("drop", "dropped mid-reply", id="connection-dropped"),
        pytest.param("stall", "stalled mid-reply for 1 s", id="read-timeout"),
    ],
)
async def test_no_retry_once_text_has_streamed(proxy: FaultProxy, kind: str, expected: str) -> None:
    proxy.reset(Fault(kind, after_events=3))
    b = backend(proxy.url, max_retries=3, timeout_s=1.0)
    received: list[str] = []
    with pytest.raises(BackendError, match=expected):
        async for chunk in b.stream(ChatPrompt(MESSAGES, 32), threading.Event(), Generation()):
            received.append(chunk)
    assert received
    assert len(proxy.state.seen) == 1


async def test_a_team_endpoint_goes_on_with_a_reply_that_broke_off(proxy: FaultProxy) -> None:
    # A replica that dies mid-reply: the balancer sends the request on to another, asked to go on from what came.
    prompt = TextPrompt("def add(a, b):\n", max_tokens=24, stop=("\n\n",))
    proxy.reset(Fault("drop", times=1, after_events=3))
    b = EndpointBackend(base_url=proxy.url, kind="openai", api_key=None, user="typist", timeout_s=30.0)
    report = Generation()
    reply = "".join([c async for c in b.stream(prompt, threading.Event(), report)])
    first, second = proxy.state.seen
    assert first.body["prompt"] == prompt.text and second.body["prompt"].startswith(prompt.text)
    came = second.body["prompt"].removeprefix(prompt.text)
    assert came and reply.startswith(came) and len(reply) > len(came)
    assert first.body["temperature"] == 0  # greedy, as the in-process model
    assert b.healthy
    # Both replicas' tokens count: the second's as it reported them, the first's (it died before reporting) estimated.
    assert report.usage.estimated and report.usage.completion_tokens >= math.ceil(len(came) / CHARS_PER_TOKEN) + 1


async def test_cancel_closes_the_stream_within_one_chunk(proxy: FaultProxy) -> None:
    proxy.reset(Fault("slow", delay_s=0.3))
    b = backend(proxy.url)
    cancel, report = threading.Event(), Generation()
    received: list[str] = []
    async for chunk in b.stream(ChatPrompt(MESSAGES, 64), cancel, report):
        received.append(chunk)
        cancel.set()
    assert len(received) == 1  # the stream ended before another chunk was read
    assert report.cancelled and report.usage.estimated
    assert proxy.state.client_gone.wait(3)
    assert proxy.state.events_sent < 10


async def test_cancel_while_waiting_for_the_first_byte(proxy: FaultProxy) -> None:
    proxy.reset(Fault("stall_open"))
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    text, report = await chat(backend(proxy.url), cancel=cancel)
    assert text == "" and report.cancelled
    assert time.monotonic() - started < 15.0  # the cancel, not the 30 s timeout, ended the wait
    assert len(proxy.state.seen) == 1
