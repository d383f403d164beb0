"""End to end: completions from llama.cpp's llama-server (`local.endpoint`, its own API) through the real tandem
server, with a real llama-server on loopback (built by `scripts/build-llama-server.sh` when absent) behind a proxy
that shows the HTTP side."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from lsp_server.backends.endpoint import KEY_HINT
from lsp_server.backends.openai_compat import LINE_MAX_TOKENS
from tests.conftest import Client, Start, command, until
from tests.e2e.test_completion import inline_params, insert
from tests.e2e.test_fleet import BLOCK, LINE, URI, ask, end_of, open_doc, recorded
from tests.loopback import (
    Fault,
    FaultProxy,
    Seen,
    embedded_model,
    llama_server_binary,
    llama_server_built,
    native_llama_server,
    network_address,
)
from tests.tiny_gguf import write_tiny_fim_model

KEY = "team-key-ada"
SERVER_ARGS = ["-c", "4096", "-np", "2", "-t", "2", "--api-key", KEY]
# Building llama-server takes about 15 minutes on 2 cores: the first test waits for it when it is not built yet.
pytestmark = [] if llama_server_built() else [pytest.mark.timeout(3600)]


@pytest.fixture(scope="session")
def binary() -> Path:
    """The llama-server binary, built the first time."""
    return llama_server_binary()


@pytest.fixture(scope="module")
def gemma(binary: Path) -> Iterator[FaultProxy]:
    """llama-server with the embedded model (no FIM tokens), two slots, an API key; a proxy in front."""
    with native_llama_server(binary, embedded_model(), [*SERVER_ARGS, "--alias", "gemma-3-270m"]) as server:
        proxy = FaultProxy(server.url)
        yield proxy
        proxy.close()


@pytest.fixture
def server(gemma: FaultProxy) -> FaultProxy:
    """The embedded model's llama-server as tandem sees it, nothing seen yet."""
    gemma.reset()
    return gemma


@pytest.fixture
def start(start_on: Start) -> Start:
    """`start_on`, with the right key unless `local` says otherwise."""

    async def run(endpoint: str, local: dict[str, Any] | None = None, **completion: Any) -> Client:
        return await start_on(endpoint, {"endpointApiKey": KEY, **(local or {})}, **completion)

    return run


async def ready(client: Client) -> bool:
    return bool((await command(client, "tandem.status"))["model"]["state"] == "ready")


def completions(proxy: FaultProxy) -> list[Seen]:
    """The requests that generate: the start-up probe of `/infill` (`n_predict` 0) left out."""
    return [seen for seen in proxy.state.seen if seen.body.get("n_predict") != 0]


async def test_llama_server_is_detected_and_asked_through_completion(
    start: Start, server: FaultProxy, tmp_path: Path
) -> None:
    client = await start(server.url)
    open_doc(client, LINE)
    result = await ask(client, LINE)

    assert result.items and result.items[0].insert_text.strip()
    [request] = completions(server)
    # The model has no FIM tokens: the server refused the probe of /infill, and the prefix goes to /completion.
    assert request.path == "/completion" and request.body["prompt"] == LINE
    assert request.body["cache_prompt"] is True and "id_slot" not in request.body  # the server picks the slot
    assert request.body["stop"] == ["\n"] and request.body["n_predict"] == LINE_MAX_TOKENS
    assert request.authorization == f"Bearer {KEY}" and len(request.user) == 16 and request.upstream_done
    model = (await command(client, "tandem.status"))["model"]
    assert (model["kind"], model["fim"], model["state"], model["name"]) == (
        "llama-server",
        None,
        "ready",
        "gemma-3-270m",
    )
    [row] = await recorded(client, tmp_path)
    assert (row["backend"], row["model"], row["outcome"]) == ("endpoint", "gemma-3-270m", "ok")
    # The counts come from the server's own timings, not from an estimate.
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0 and not row["estimated"]


async def test_a_fim_model_is_asked_through_infill(start: Start, binary: Path, tmp_path: Path) -> None:
    model = write_tiny_fim_model(tmp_path / "tiny-fim.gguf")  # FIM markers and fim_* metadata, random weights
    with native_llama_server(binary, model, [*SERVER_ARGS, "--alias", "tiny-fim"]) as llama:
        proxy = FaultProxy(llama.url)
        try:
            client = await start(proxy.url)
            text = "import os\n\ndef add(a, b):\n    return \n\nprint(add(1, 2))\n"
            open_doc(client, text)
            params = inline_params(types.Position(3, len("    return ")), invoked=True, uri=URI)
            result = await client.text_document_inline_completion_async(params)
            assert isinstance(result, types.InlineCompletionList)  # random weights: any text, or none
            [request] = completions(proxy)
            assert request.path == "/infill" and request.upstream_done
            body = request.body
            # The server lays out FIM with the model's tokens; the cursor's line goes in `prompt`, as llama.vscode
            # sends it, and no marker is in tandem's text.
            assert (body["input_prefix"], body["prompt"]) == ("import os\n\ndef add(a, b):\n", "    return ")
            assert body["input_suffix"] == "\n\nprint(add(1, 2))\n" and body["input_extra"] == []
            assert "<fim_prefix>" not in str(body)
            assert (await command(client, "tandem.status"))["model"]["fim"] == "llama-server"
            [row] = await recorded(client, tmp_path)
            assert (row["backend"], row["model"]) == ("endpoint", "tiny-fim") and row["prompt_tokens"] > 0
        finally:
            proxy.close()


async def test_a_superseded_completion_closes_its_stream_at_llama_server(
    start: Start, server: FaultProxy, tmp_path: Path
) -> None:
    client = await start(server.url, multiline="always", maxTokens=64, debounceMs=0)
    await until(lambda: ready(client))  # the server is known: its probe is done
    server.reset(Fault("slow", times=1, delay_s=0.25))  # the first reply trickles: it is still running
    open_doc(client, BLOCK)
    first = ask(client, BLOCK, invoked=False)
    await until(lambda: completions(server) and completions(server)[0].events >= 2)
    insert(client, 2, end_of(BLOCK), "    ", URI)
    second = ask(client, BLOCK + "    ", invoked=False)
    assert not (await first).items  # superseded
    await second

    old = completions(server)[0]
    assert old.path == "/completion" and old.body["n_predict"] == 64 and "t_max_predict_ms" in old.body
    # Closed mid-stream: the proxy still had events to forward when tandem hung up (it then closes its upstream
    # connection, and llama-server stops that slot). Whether llama-server was itself still generating depends on the
    # machine: on a starved one, t_max_predict_ms may have ended the block at its first line already.
    await until(lambda: old.client_left, timeout_s=10)
    assert old.events < 64
    counters = (await command(client, "tandem.status"))["counters"]
    assert counters["cancelledGenerations"] == 1 and counters["errors"] == 0 and client.messages == []
    rows = await recorded(client, tmp_path)
    assert (rows[0]["backend"], rows[0]["outcome"]) == ("endpoint", "cancelled")
    # Counted by the server up to the close (its timings come with every event), not estimated from the prompt.
    assert old.body["timings_per_token"] is True
    assert rows[0]["prompt_tokens"] > 0 and not rows[0]["estimated"]


async def test_typing_has_llama_server_evaluate_the_prompt_ahead_once_per_window(
    start: Start, server: FaultProxy, tmp_path: Path
) -> None:
    client = await start(server.url, debounceMs=300)  # while the debounce runs, the prompt is evaluated ahead
    await until(lambda: ready(client))
    text = "".join(f"def f{i}(a, b):\n    return a * {i} + b\n\n\n" for i in range(40)) + "def add(a, b):\n    "
    open_doc(client, text)
    answers = []
    for version, key in enumerate("ret", start=2):  # three keys, well within the debounce
        insert(client, version, end_of(text), key, URI)
        text += key
        answers.append(ask(client, text, invoked=False))
    await asyncio.gather(*answers)

    warmed = [seen for seen in server.state.seen if seen.body.get("n_predict") == 0 and "prompt" in seen.body]
    assert len(warmed) == 1  # at the first key only: the next ones share its window
    assert not warmed[0].body["stream"] and text.startswith(warmed[0].body["prompt"])
    [request] = completions(server)
    assert request.body["prompt"].endswith("    ret") and request.at > warmed[0].at
    [row] = await recorded(client, tmp_path)
    # The request at the pause found the prompt in the slot's cache: only what was typed since was evaluated.
    assert row["prompt_tokens"] > 400 and row["prompt_tokens"] - row["cached_tokens"] <= 8


@pytest.mark.parametrize(
    ("key", "said"),
    [pytest.param("wrong-key", "rejected the API key", id="wrong"), pytest.param("", "needs an API key", id="none")],
)
async def test_a_refused_key_is_told_to_the_user(start: Start, server: FaultProxy, key: str, said: str) -> None:
    client = await start(server.url, {"endpointApiKey": key})
    open_doc(client, LINE)
    assert not (await ask(client, LINE)).items
    await until(lambda: client.messages)
    shown = [m.message for m in client.messages]
    assert any(f"{said} (401): {KEY_HINT}" in m for m in shown), shown
    assert not any(KEY in m or "wrong-key" in m for m in shown)  # the key is never repeated
    model = (await command(client, "tandem.status"))["model"]
    assert model["state"] == "error" and said in model["error"]


async def test_denied_files_never_reach_llama_server_on_another_machine(binary: Path, start: Start) -> None:
    with native_llama_server(binary, embedded_model(), SERVER_ARGS) as llama:
        remote = FaultProxy(llama.url, host=network_address())  # a real llama-server, reached over the network
        try:
            client = await start(remote.url)
            secret_uri = (Path(URI.removeprefix("file://")).parent / "secrets.py").as_uri()
            text = "DATABASE_PASSWORD = "
            open_doc(client, text, secret_uri)
            open_doc(client, LINE)
            assert not (await ask(client, text, secret_uri)).items
            assert (await ask(client, LINE)).items  # other files are served by the same server
            assert [s.path for s in completions(remote)] == ["/completion"]
            assert all("DATABASE_PASSWORD" not in str(s.body) for s in remote.state.seen)
            shown = [m.message for m in client.messages]
            assert any("Not sent to the team endpoint" in m for m in shown)
        finally:
            remote.close()
