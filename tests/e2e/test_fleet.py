"""End to end: completions from a team's OpenAI-compatible server (`local.endpoint`) through the real
tandem server, with `python -m llama_cpp.server` on loopback behind a proxy that shows the HTTP side."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from lsp_server.backends.openai_compat import LINE_MAX_TOKENS
from lsp_server.context import CHARS_PER_TOKEN
from tests.conftest import REPO, Client, Start, command, until
from tests.e2e.test_completion import inline_params, insert, ledger_rows
from tests.loopback import Fault, FaultProxy, llama_server, network_address
from tests.tiny_gguf import write_tiny_fim_model

URI = (REPO / "fleet_sample.py").as_uri()
LINE = "def add(a, b):\n    return "
"""Ends mid-line: a single-line suggestion."""
BLOCK = "import os\n\n\ndef list_python_files(folder):\n"
"""Ends at a block start: a multi-line suggestion."""


def open_doc(client: Client, text: str, uri: str = URI) -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text))
    )


def end_of(text: str) -> types.Position:
    lines = text.split("\n")
    return types.Position(len(lines) - 1, len(lines[-1]))


def ask(client: Client, text: str, uri: str = URI, invoked: bool = True) -> asyncio.Future[Any]:
    return asyncio.ensure_future(
        client.text_document_inline_completion_async(inline_params(end_of(text), invoked, uri))
    )


async def recorded(client: Client, data_dir: Path) -> list[dict[str, Any]]:
    await command(client, "tandem.usage")  # waits for the ledger's writer
    return ledger_rows(data_dir)


@pytest.mark.parametrize("usage", ["reported", "omitted"])
async def test_a_completion_from_the_fleet_is_capped_and_recorded(
    start_on: Start, proxy: FaultProxy, tmp_path: Path, usage: str
) -> None:
    proxy.reset(Fault("no_usage") if usage == "omitted" else Fault())
    client = await start_on(proxy.url)
    open_doc(client, LINE)
    result = await ask(client, LINE)

    assert result.items and result.items[0].insert_text.strip()
    [request] = proxy.state.seen
    served = request.body["model"]
    assert request.path == "/v1/completions" and served.endswith(".gguf")
    assert request.body["prompt"] == LINE  # the embedded model has no FIM tokens: the prefix alone
    # A single line: the server stops at its end, and never runs longer than a line can be.
    assert request.body["stop"] == ["\n"] and request.body["max_tokens"] == LINE_MAX_TOKENS
    assert request.body["stream"] is True and request.upstream_done and not request.client_left
    [row] = await recorded(client, tmp_path)
    assert (row["task"], row["backend"], row["model"], row["outcome"]) == ("completion", "endpoint", served, "ok")
    assert row["first_token_ms"] > 0 and row["total_ms"] >= row["first_token_ms"]
    if usage == "reported":
        assert proxy.state.usage is not None and not row["estimated"]
        assert row["prompt_tokens"] == proxy.state.usage["prompt_tokens"] > 0
        assert row["completion_tokens"] == proxy.state.usage["completion_tokens"] > 0
    else:  # llama_cpp.server itself sends no usage in a stream: tandem estimates it, and says so
        assert proxy.state.usage is None and row["estimated"]
        assert row["prompt_tokens"] == math.ceil(len(LINE) / CHARS_PER_TOKEN)
        assert row["completion_tokens"] > 0


async def test_a_burst_of_typing_reaches_the_fleet_as_at_most_two_requests(start_on: Start, proxy: FaultProxy) -> None:
    client = await start_on(proxy.url, debounceMs=600)  # far above the gaps, even on a loaded machine
    text = LINE
    open_doc(client, text)
    pending = []
    for version, char in enumerate("a + b  # the sum", start=2):
        insert(client, version, end_of(text), char, URI)
        text += char
        pending.append(ask(client, text, invoked=False))  # sent at once, as an editor does on each key
        await asyncio.sleep(0.06)  # 16 keys a second
    results = await asyncio.gather(*pending)

    # Each key was answered (superseded: empty; typed into the last suggestion: its rest), and
    # the debounce kept all but one or two off the fleet.
    assert all(isinstance(r, types.InlineCompletionList) for r in results)
    assert 1 <= len(proxy.state.seen) <= 2
    counters = (await command(client, "tandem.status"))["counters"]
    assert counters["inlineRequests"] == len(results) and counters["generations"] == len(proxy.state.seen)


async def test_a_superseded_completion_closes_its_stream_at_the_fleet(
    start_on: Start, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.reset(Fault("slow", times=1, delay_s=0.25))  # the first reply trickles: it is still running
    client = await start_on(proxy.url, multiline="always", maxTokens=64, debounceMs=0)
    open_doc(client, BLOCK)
    first = ask(client, BLOCK, invoked=False)
    await until(lambda: proxy.state.seen and proxy.state.seen[0].events >= 2)
    insert(client, 2, end_of(BLOCK), "    ", URI)
    typed = BLOCK + "    "
    second = ask(client, typed, invoked=False)
    assert not (await first).items  # superseded
    await second

    old = proxy.state.seen[0]
    assert old.body["max_tokens"] == 64  # what the fleet may spend on it even if it never notices
    await until(lambda: old.client_left, timeout_s=10)
    assert not old.upstream_done and old.events < 64  # closed mid-stream, the upstream connection with it
    counters = (await command(client, "tandem.status"))["counters"]
    assert counters["cancelledGenerations"] == 1 and counters["generations"] == 2
    assert counters["errors"] == 0 and client.messages == []  # closing on purpose is not a failure
    rows = await recorded(client, tmp_path)
    assert (rows[0]["backend"], rows[0]["outcome"]) == ("endpoint", "cancelled")
    assert rows[0]["estimated"] and 0 < rows[0]["completion_tokens"] < 64  # the text that arrived, counted
    assert rows[1]["outcome"] in ("ok", "empty")


async def test_denied_files_never_reach_an_endpoint_on_another_machine(upstream: str, start_on: Start) -> None:
    remote = FaultProxy(upstream, host=network_address())  # a real server, reached over the network
    try:
        client = await start_on(remote.url)
        secret_uri = (REPO / "secrets.py").as_uri()  # matches the default privacy.cloudDeny 'secrets.*'
        text = 'def login(password="hunter2"):\n    return password\n'
        open_doc(client, "", secret_uri)
        insert(client, 2, types.Position(0, 0), text, secret_uri)  # typed: an edit the recent-edit ring keeps
        # Another file calls the secret file's function: its signature would be context, the edit a recent chunk.
        uses = "def main():\n    login()\n    return "
        open_doc(client, uses)

        assert not (await ask(client, text, secret_uri)).items
        whole = {"start": {"line": 0, "character": 0}, "end": {"line": 2, "character": 0}}
        explained = await command(client, "tandem.explain", {"uri": secret_uri, "range": whole})
        assert remote.state.seen == []
        assert explained["backend"] == "none" and explained["outcome"] == "denied"
        assert "Not sent to the team endpoint" in explained["text"] and "'secrets.*'" in explained["text"]
        shown = [m.message for m in client.messages]
        assert any("Not sent to the team endpoint" in m and "No completions in this file" in m for m in shown)
        await ask(client, uses)  # other files are served by the same endpoint
        [request] = remote.state.seen
        assert request.path == "/v1/completions" and "login()" in request.body["prompt"]
        assert "hunter2" not in request.body["prompt"]
        status = await command(client, "tandem.status")
        assert [chunk["uri"] for chunk in status["recent"]["chunks"]] == [secret_uri]  # kept for this machine
    finally:
        remote.close()


async def test_a_fim_model_on_the_fleet_gets_its_fim_prompt(start_on: Start, tmp_path: Path) -> None:
    model = write_tiny_fim_model(tmp_path / "tiny-fim.gguf")  # StarCoder's markers, random weights
    with llama_server(model, alias="tiny-starcoder") as url:  # the name a team's server lists
        proxy = FaultProxy(url)
        try:
            client = await start_on(proxy.url)
            text = "def add(a, b):\n    return \n\nprint(add(1, 2))\n"
            open_doc(client, text)
            params = inline_params(types.Position(1, len("    return ")), invoked=True, uri=URI)
            result = await client.text_document_inline_completion_async(params)
            assert isinstance(result, types.InlineCompletionList)  # random weights: any text, or none
            [request] = proxy.state.seen
            assert request.body["model"] == "tiny-starcoder" and request.upstream_done
            prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
            assert request.body["prompt"] == f"<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>"
            assert proxy.state.usage is not None
            [row] = await recorded(client, tmp_path)
            assert (row["backend"], row["model"]) == ("endpoint", "tiny-starcoder")
            assert row["prompt_tokens"] == proxy.state.usage["prompt_tokens"] > 0
        finally:
            proxy.close()


async def test_a_password_in_the_endpoint_url_is_neither_logged_nor_shown(
    start_on: Start, proxy: FaultProxy, capfd: pytest.CaptureFixture[str]
) -> None:
    address = proxy.url.split("://", 1)[1].removesuffix("/v1")
    client = await start_on(f"http://alice:pw-s3cret@{address}")  # basic auth in the URL, as some teams set it up
    open_doc(client, LINE)
    assert (await ask(client, LINE)).items  # served: the URL works
    proxy.reset(Fault("404"))  # a failure whose message names the server
    other = (REPO / "fleet_other.py").as_uri()
    open_doc(client, BLOCK, other)
    assert not (await ask(client, BLOCK, other)).items
    await until(lambda: any("not found at" in m.message for m in client.messages))
    status = await command(client, "tandem.status")
    logged = capfd.readouterr().err
    assert "HTTP Request: POST http://alice:***@" in logged  # the requests are logged, the password is not
    assert "pw-s3cret" not in logged
    assert status["model"]["endpoint"].startswith(f"http://alice:***@{address}/v1")
    assert "pw-s3cret" not in str(status) and "pw-s3cret" not in str([m.message for m in client.messages])
