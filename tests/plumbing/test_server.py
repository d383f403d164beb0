"""The LSP layer on scripted backends (`tests/plumbing/server.py`): requests reach the application and its answers
come back, settings changes rebuild only what they touch. Real-model end-to-end tests stay in tests/e2e."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio
from lsprotocol import types

from lsp_server.tools.session import plain
from tests.conftest import Client, command, start_client, until
from tests.plumbing.server import REPLY

URI = "file:///plumbing/add.py"
TEXT = "def add(a, b):\n    return "
END = types.Position(1, len("    return "))


@pytest_asyncio.fixture
async def client(editor: str, tmp_path: Path) -> AsyncIterator[Client]:
    """The plumbing server, initialized as `editor`, with one document open."""
    client = await start_client(tmp_path, editor, server=("-m", "tests.plumbing.server"))
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(URI, "python", version=1, text=TEXT))
    )
    yield client
    await client.shutdown_session()
    await client.stop()


async def complete(client: Client) -> list[types.InlineCompletionItem]:
    kind = types.InlineCompletionTriggerKind.Invoked
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(URI),
        position=END,
        context=types.InlineCompletionContext(trigger_kind=kind),
    )
    result = await client.text_document_inline_completion_async(params)
    assert isinstance(result, types.InlineCompletionList)
    return list(result.items)


def reconfigure(client: Client, settings: dict[str, Any]) -> None:
    """Change the client's `tandem` settings and say so, as VS Code does."""
    client.set_configuration(settings, section="tandem")
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))


async def test_a_completion_comes_back_with_its_stage_times(client: Client) -> None:
    [item] = await complete(client)
    assert item.insert_text == REPLY and item.range == types.Range(END, END)
    assert item.command is not None and item.command.command == "tandem.accepted"
    status = await command(client, "tandem.status")
    assert status["counters"]["generations"] == 1 and status["model"]["name"] == "scripted-4096"
    timing = status["lastTiming"]
    assert timing["server"] > timing["total"] > 0  # the LSP layer finished the engine's times once it answered


async def test_settings_changes_rebuild_only_what_they_touch(client: Client) -> None:
    def shows(section: str, key: str, value: Any) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return bool((await command(client, "tandem.status"))[section][key] == value)

        return check

    assert (await command(client, "tandem.status"))["modelLoads"] == 1
    reconfigure(client, {"cloud": {"dailyBudgetUsd": 1.0}, "completion": {"debounceMs": 10}})
    await until(shows("settings", "debounceMs", 10))
    assert (await command(client, "tandem.status"))["modelLoads"] == 1 and await complete(client)
    reconfigure(client, {"local": {"contextSize": 1024}})
    await until(shows("model", "name", "scripted-1024"))
    report = await command(client, "tandem.status")
    assert report["modelLoads"] == 2 and report["counters"]["generations"] == 1  # counters survive
    assert [item.insert_text for item in await complete(client)] == [REPLY]


async def test_explain_streams_from_the_local_side_and_says_why_first(client: Client) -> None:
    chunks: list[dict[str, Any]] = []
    client.feature("tandem/assistChunk")(lambda params: chunks.append(plain(params)))
    argument = {"uri": URI, "range": {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 0}}}
    result = await command(client, "tandem.explain", argument)
    reason = "No cloud API key is set (OPENAI_API_KEY). Explain runs on the local model."
    assert (result["backend"], result["model"], result["outcome"], result["reason"]) == (
        "local",
        "scripted-4096",
        "ok",
        reason,
    )
    notice, *answer = chunks
    assert (notice["notice"], notice["text"]) == (reason, "")  # before the answer
    # The scripted reply after the words a local explanation begins with, written into the prompt.
    assert result["text"] == "".join(c["text"] for c in answer) == "This codea + b "


async def test_a_setting_the_user_removed_is_gone(editor: str, tmp_path: Path) -> None:
    """A pushed didChangeConfiguration object replaces the startup options; a pulled object overrides key by key."""
    options = {"completion": {"debounceMs": 100, "multiline": "always"}}
    client = await start_client(tmp_path, editor, options, server=("-m", "tests.plumbing.server"))
    try:
        client.set_configuration({"completion": {"multiline": "never"}}, section="tandem")
        pushed = {"tandem": {"completion": {"maxTokens": 32}}}  # the user removed debounceMs and multiline
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=pushed))

        async def settled() -> bool:
            return (await command(client, "tandem.status"))["settings"]["multiline"] == "never"

        await until(settled)
        assert (await command(client, "tandem.status"))["settings"] == {"debounceMs": "auto", "multiline": "never"}
    finally:
        await client.shutdown_session()
        await client.stop()
