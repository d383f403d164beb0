"""End to end: what became of the suggestions shown (accepted, in part, undone, kept), and the prefetch after an
accept, through the real server, the embedded model and the real ledger file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lsprotocol import types

from tests.conftest import Client, command, until
from tests.e2e.test_completion import (
    SOURCE,
    URI,
    complete,
    end_position,
    inline_params,
    insert,
    ledger_rows,
    open_doc,
    units,
)
from tests.e2e.test_completion import status as server_status

OTHER = "file:///work/other.py"


def after(position: types.Position, text: str, editor: str) -> types.Position:
    """Where the cursor is once `text` is inserted at `position`."""
    lines = text.split("\n")
    column = units(lines[-1], editor) + (position.character if len(lines) == 1 else 0)
    return types.Position(position.line + len(lines) - 1, column)


def delete(client: Client, version: int, start: types.Position, end: types.Position, uri: str = URI) -> None:
    insert_range = types.Range(start, end)
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(range=insert_range, text="")],
        )
    )


def close(client: Client, uri: str) -> None:
    client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri=uri)))


async def suggest(client: Client, position: types.Position) -> tuple[str, str]:
    """The suggestion at `position` (asked for explicitly): its text and request id."""
    items = await complete(client, position)
    assert items, "the model suggested nothing"
    text, accepted = items[0].insert_text, items[0].command
    assert isinstance(text, str) and accepted is not None and accepted.arguments
    return text, accepted.arguments[0]


async def execute(client: Client, name: str, *arguments: Any) -> None:
    """Run a command that answers nothing, as the editor runs an item's command."""
    await client.workspace_execute_command_async(types.ExecuteCommandParams(command=name, arguments=list(arguments)))


def row(data_dir: Path, request_id: str) -> dict[str, Any]:
    return next(r for r in ledger_rows(data_dir) if r["request_id"] == request_id)


async def test_accepted_text_edited_in_part_and_an_undone_accept(client: Client, editor: str, tmp_path: Path) -> None:
    open_doc(client, SOURCE)
    position = end_position(SOURCE, editor)
    text, request_id = await suggest(client, position)
    first_line = text.split("\n")[0]
    assert len(first_line) >= 4, text
    insert(client, 2, position, text)  # as the editor does on Tab, then it runs the item's command
    await execute(client, "tandem.accepted", request_id)
    # Delete the first 3 characters of the accepted text: what stays is known exactly.
    delete(client, 3, position, types.Position(position.line, position.character + units(first_line[:3], editor)))
    # The 30 s check comes from the server's own timer (the real clock): wait for it, then edit again.
    await until(lambda: row(tmp_path, request_id)["retained_chars_30s"] is not None, timeout_s=180)
    assert row(tmp_path, request_id)["retained_chars_30s"] == len(text) - 3
    delete(client, 4, position, types.Position(position.line, position.character + units(first_line[3], editor)))
    close(client, URI)  # its text is final: the 5 min check is what is left now

    # Another document: accept, then undo at once.
    open_doc(client, SOURCE, OTHER)
    other_text, other_id = await complete_in(client, OTHER, position)
    insert(client, 2, position, other_text, OTHER)
    await execute(client, "tandem.accepted", other_id)
    delete(client, 3, position, after(position, other_text, editor), OTHER)
    close(client, OTHER)

    usage = await command(client, "tandem.usage")
    rows = [r for r in usage["acceptance"] if r["language"] == "python"]
    assert rows == [
        {
            "model": rows[0]["model"],
            "language": "python",
            "shown": 2,
            "accepted": 2,
            "acceptedChars": len(text) + len(other_text),
            "retainedChars30s": len(text) - 3,
            "retainedChars5m": len(text) - 4,
            "reversals": 1,
            "partiallyAccepted": 0,
            "rate": 1.0,
        }
    ]
    assert (row(tmp_path, other_id)["retained_chars_30s"], row(tmp_path, other_id)["reversed"]) == (0, 1)


async def complete_in(client: Client, uri: str, position: types.Position) -> tuple[str, str]:
    result = await client.text_document_inline_completion_async(inline_params(position, invoked=True, uri=uri))
    assert isinstance(result, types.InlineCompletionList) and result.items, result
    item = result.items[0]
    assert isinstance(item.insert_text, str) and item.command is not None and item.command.arguments
    return item.insert_text, item.command.arguments[0]


async def test_partial_accepts_reported_or_seen_in_the_changes(client: Client, editor: str, tmp_path: Path) -> None:
    text = 'def greet(name):\n    """Say hello: Grüße."""\n    message = '  # non-ASCII: utf-8 and utf-16 differ
    open_doc(client, text)
    position = end_position(text, editor)
    ghost, request_id = await suggest(client, position)
    assert len(ghost) >= 4, ghost
    # One character looks like typing: only the editor's report (Neovim's accept-word) says it was accepted.
    insert(client, 2, position, ghost[0])
    await execute(client, "tandem.partiallyAccepted", request_id, units(ghost[0], editor))
    # A word put in by an editor that does not report it (VS Code's accept-word): seen in the change.
    word = ghost[1 : max(3, len(ghost) // 2)]
    insert(client, 3, after(position, ghost[0], editor), word)
    close(client, URI)
    assert row(tmp_path, request_id)["accepted"] == 0
    usage = await command(client, "tandem.usage")
    (figures,) = usage["acceptance"]
    assert (figures["shown"], figures["accepted"], figures["partiallyAccepted"]) == (1, 0, 1)
    assert figures["acceptedChars"] == figures["retainedChars5m"] == 1 + len(word)


async def test_a_bad_partial_accept_report_is_refused_clearly(client: Client) -> None:
    try:
        await execute(client, "tandem.partiallyAccepted", "some-id")
    except Exception as exc:
        assert "tandem.partiallyAccepted takes [requestId, acceptedLength]" in str(exc)
    else:
        raise AssertionError("accepted a report without its length")


CHAIN = (
    'import argparse\n\n\ndef main():\n    parser = argparse.ArgumentParser()\n    parser.add_argument("--input")\n'
    "    parser.add_argument("
)


async def test_after_a_whole_accept_the_next_suggestion_is_prefetched(client: Client, editor: str) -> None:
    open_doc(client, CHAIN)
    position = end_position(CHAIN, editor)
    text, request_id = await suggest(client, position)
    insert(client, 2, position, text)
    await execute(client, "tandem.accepted", request_id)
    before = (await server_status(client))["counters"]
    assert before["prefetched"] == 1
    # The editor asks at the end of the accepted text, as it does after an accept: no debounce, no new generation.
    result = await client.text_document_inline_completion_async(inline_params(after(position, text, editor)))
    assert isinstance(result, types.InlineCompletionList) and result.items
    assert isinstance(result.items[0].insert_text, str) and result.items[0].insert_text.startswith("\n")
    counters = (await server_status(client))["counters"]
    assert counters["prefetchUsed"] == 1, (counters, result, text)
    assert counters["generations"] == 2  # the first suggestion and the prefetch
