"""End to end: the real `tandem serve` over stdio and the embedded model, as VS Code and as Neovim."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled

from lsp_server import documents
from lsp_server.tools.session import plain
from tests.conftest import Client, serving, until

SOURCE = '''import os


def read_lines(path):
    """Return the lines of a text file."""
    with open(path) as handle:
        return handle.read().splitlines()


def count_words(text):
    '''
URI = "file:///work/sample.py"


def units(text: str, editor: str) -> int:
    """Length of `text` in the position units `editor` negotiates."""
    return documents.units(text, "utf-8" if editor.startswith("neovim") else "utf-16")


def end_position(text: str, editor: str) -> types.Position:
    lines = text.split("\n")
    return types.Position(line=len(lines) - 1, character=units(lines[-1], editor))


def open_doc(client: Client, text: str, uri: str = URI) -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text))
    )


def insert(client: Client, version: int, at: types.Position, text: str, uri: str = URI) -> None:
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(at, at), text=text)],
        )
    )


def inline_params(position: types.Position, invoked: bool = False, uri: str = URI) -> types.InlineCompletionParams:
    kind = types.InlineCompletionTriggerKind.Invoked if invoked else types.InlineCompletionTriggerKind.Automatic
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=position,
        context=types.InlineCompletionContext(trigger_kind=kind),
    )


async def complete(client: Client, position: types.Position, invoked: bool = True) -> list[types.InlineCompletionItem]:
    result = await client.text_document_inline_completion_async(inline_params(position, invoked))
    assert isinstance(result, types.InlineCompletionList), result
    return list(result.items)


async def status(client: Client) -> dict[str, Any]:
    result = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="tandem.status"))
    return plain(result)


def ledger_rows(data_dir: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(data_dir / "ledger.sqlite3")
    db.row_factory = sqlite3.Row
    return [dict(row) for row in db.execute("SELECT * FROM requests ORDER BY time")]


async def test_initialize_advertises_inline_completion(client: Client, editor: str) -> None:
    caps = client.server_capabilities
    assert caps is not None
    assert caps.inline_completion_provider is not None
    assert caps.position_encoding == ("utf-8" if editor.startswith("neovim") else "utf-16")
    assert set(caps.execute_command_provider.commands) >= {"tandem.status", "tandem.usage"}


async def test_completion_appears_for_a_simple_function(client: Client, editor: str) -> None:
    open_doc(client, SOURCE)
    position = end_position(SOURCE, editor)
    items = await complete(client, position)
    assert len(items) == 1
    item = items[0]
    assert isinstance(item.insert_text, str) and item.insert_text.strip()
    assert item.range == types.Range(position, position)
    assert item.command is not None and item.command.command == "tandem.accepted"
    report = await status(client)
    assert report["counters"]["generations"] == 1
    assert report["model"]["state"] == "ready"
    assert report["model"]["fim"] is None  # Gemma 3 270M has no FIM tokens: prefix-only mode


async def test_typed_ahead_after_non_ascii_text_is_served_from_cache(client: Client, editor: str) -> None:
    # Non-ASCII text before the cursor: utf-16 and utf-8 positions differ on this line.
    text = 'import os\n\n\ndef read_lines(path):\n    print("Grüße 😀"); return open('
    open_doc(client, text)
    position = end_position(text, editor)
    items = await complete(client, position)
    assert items, "the model suggested nothing"
    ghost = items[0].insert_text
    assert isinstance(ghost, str) and len(ghost) >= 2
    typed = ghost[:2]
    insert(client, 2, position, typed)
    after = types.Position(position.line, position.character + units(typed, editor))
    rest = await complete(client, after, invoked=False)
    assert [i.insert_text for i in rest] == [ghost[2:]]
    report = await status(client)
    assert report["counters"]["cacheHits"] == 1
    assert report["counters"]["generations"] == 1  # the typed-ahead hit made no model call
    # Its near-zero time is counted apart from the time of the suggestion the model wrote.
    assert (report["latencyMs"]["count"], report["cacheHitLatencyMs"]["count"]) == (1, 1)
    assert report["latencyMs"]["p50"] > report["cacheHitLatencyMs"]["p50"]


async def test_burst_of_keystrokes_runs_at_most_two_generations(editor: str, tmp_path: Path) -> None:
    # A fixed debounce far above the typist's gaps: a loaded machine that delays one key by 100 ms must not
    # start a generation (the adaptive debounce's rule is table-tested in tests/unit/test_engine.py).
    async with serving(tmp_path, editor, {"completion": {"debounceMs": 300}}) as client:
        text = SOURCE
        open_doc(client, text)
        pending = []
        word = "    words = text.split() "[:20]
        for i, char in enumerate(word):
            position = end_position(text, editor)
            insert(client, i + 2, position, char)
            text += char
            request = client.text_document_inline_completion_async(inline_params(end_position(text, editor)))
            pending.append(asyncio.ensure_future(request))  # sent now, as an editor does
            await asyncio.sleep(0.03)  # a fast typist
        results = await asyncio.gather(*pending)
        assert len(results) == 20
        assert all(isinstance(r, types.InlineCompletionList) for r in results)
        assert all(not r.items for r in results[:-1])  # superseded requests are answered, empty
        report = await status(client)
        assert report["counters"]["inlineRequests"] == 20
        assert report["counters"]["generations"] <= 2
        assert report["counters"]["supersededRequests"] + report["counters"]["cancelledGenerations"] >= 18, report


# A list the model goes on writing line after line: its suggestion is a block of _MAX_LINES lines.
LONG_LIST = "# Powers of two, one per line.\nPOWERS = [\n    1,\n    2,\n    4,\n    8,\n"


async def test_cancel_request_stops_the_generation(editor: str, tmp_path: Path) -> None:
    # Cancelled by $/cancelRequest as soon as the first line has streamed: the generation is certainly
    # running then, whatever the machine's speed, with most of its lines still to write.
    async with serving(tmp_path, editor, {"completion": {"maxTokens": 400, "multiline": "always"}}) as client:
        open_doc(client, LONG_LIST)
        position = end_position(LONG_LIST, editor)
        future = client.protocol.send_request(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(position, invoked=True), msg_id="long-1"
        )
        await until(lambda: client.ghost_text or future.done())
        assert client.ghost_text and not future.done(), "the first line must stream before the answer"
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="long-1"))
        with pytest.raises(JsonRpcRequestCancelled):  # answered with the cancel error, not a result
            await asyncio.wrap_future(future)
        report = await status(client)
        assert report["counters"]["cancelledGenerations"] == 1
        # The worker is free again: the same request, not cancelled, is served to its end.
        items = await complete(client, position)
        assert items and str(items[0].insert_text).count("\n") >= 3, items
        await client.workspace_execute_command_async(types.ExecuteCommandParams(command="tandem.usage"))
        cancelled, finished = ledger_rows(tmp_path)
        assert (cancelled["outcome"], finished["outcome"]) == ("cancelled", "ok")
        # Stopped early, every token it generated counted.
        assert 0 < cancelled["completion_tokens"] < finished["completion_tokens"]


async def test_streams_first_line_before_the_answer(editor: str, tmp_path: Path) -> None:
    async with serving(tmp_path, editor, {"completion": {"multiline": "always", "maxTokens": 80}}) as client:
        text = "import os\n\n\ndef list_python_files(folder):\n"
        open_doc(client, text)
        items = await complete(client, end_position(text, editor))
        assert items
        final = items[0].insert_text
        assert isinstance(final, str) and "\n" in final, final  # greedy decoding: a multi-line body
        assert client.ghost_text, "multi-line ghost text must stream before the answer"
        first = client.ghost_text[0]
        assert first["uri"] == URI
        assert final.startswith(first["text"])
        assert len(first["text"]) < len(final)


async def test_fim_model_from_gguf_metadata(tmp_path: Path) -> None:
    """A model whose GGUF carries fim_* metadata is served in FIM mode through the whole server."""
    from tests.tiny_gguf import write_tiny_fim_model

    model = write_tiny_fim_model(tmp_path / "tiny-fim.gguf")
    async with serving(tmp_path, "neovim@v0.11.0", env={"TANDEM_MODEL": str(model)}) as client:
        text = "def add(a, b):\n    return \n\nprint(add(1, 2))\n"
        open_doc(client, text)
        items = await complete(client, types.Position(line=1, character=11))  # after `return `
        assert isinstance(items, list)  # random weights: any text, or none, is a valid answer
        report = await status(client)
        assert report["model"]["state"] == "ready"
        assert report["model"]["fim"] == "gguf"
        assert report["counters"]["generations"] == 1
        await client.workspace_execute_command_async(types.ExecuteCommandParams(command="tandem.usage"))
        rows = ledger_rows(tmp_path)
        assert rows and rows[-1]["prompt_tokens"] > 0  # prompt with suffix and markers went through


async def test_changed_settings_apply_without_a_restart(client: Client, editor: str) -> None:
    """workspace/didChangeConfiguration: the server pulls the `tandem` section again and applies it."""
    open_doc(client, SOURCE)
    assert (await status(client))["settings"]["multiline"] == "auto"
    client.set_configuration({"completion": {"multiline": "never", "debounceMs": 10}}, section="tandem")
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    for _ in range(100):
        report = await status(client)
        if report["settings"]["multiline"] == "never":
            break
        await asyncio.sleep(0.05)
    assert report["settings"] == {"debounceMs": 10, "multiline": "never"}
    items = await complete(client, end_position(SOURCE, editor))
    assert items and "\n" not in str(items[0].insert_text)  # single line now, even at a block start
    assert (await status(client))["model"]["state"] == "ready"
