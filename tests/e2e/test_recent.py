"""End to end: an edit in one open file is context for a completion in another (the recent-edit ring)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from tests.conftest import Client, serving
from tests.e2e.test_completion import end_position, inline_params, insert, open_doc, status

HELPERS = "file:///work/helpers.py"
MAIN = "file:///work/main.py"
DEFINITION = "def blend_quarterly_ledgers(widgets):\n    return sum(w.total for w in widgets)\n"
USE = "import helpers\n\n\ndef report(widgets):\n    totals = helpers.blend_"


async def _after_defining_elsewhere(client: Client, editor: str) -> str:
    """Type a new function into helpers.py line by line, then ask for a completion in main.py that needs its name."""
    open_doc(client, "import os\n\n\n", HELPERS)
    for version, line in enumerate(DEFINITION.splitlines(keepends=True), 2):
        insert(client, version, types.Position(line=3 + version - 2, character=0), line, HELPERS)
    open_doc(client, USE, MAIN)
    result = await client.text_document_inline_completion_async(
        inline_params(end_position(USE, editor), invoked=True, uri=MAIN)
    )
    assert isinstance(result, types.InlineCompletionList), result
    return str(result.items[0].insert_text) if result.items else ""


async def test_a_function_typed_in_another_file_completes_its_name(editor: str, tmp_path: Path) -> None:
    async with serving(tmp_path, editor) as client:
        suggestion = await _after_defining_elsewhere(client, editor)
        assert suggestion.startswith("quarterly_ledgers("), suggestion
        ring: dict[str, Any] = (await status(client))["recent"]
        assert [chunk["uri"] for chunk in ring["chunks"]] == [HELPERS]


async def test_without_the_ring_the_name_is_unknown(tmp_path: Path) -> None:
    """The control: the same session with `completion.recentChunks` 0 cannot know the name."""
    async with serving(tmp_path, options={"completion": {"recentChunks": 0}}) as client:
        suggestion = await _after_defining_elsewhere(client, "visual-studio-code")
        assert not suggestion.startswith("quarterly_ledgers"), suggestion
        assert (await status(client))["recent"]["chunks"] == []


async def test_a_saved_edit_of_the_same_file_is_context_above_the_window(tmp_path: Path) -> None:
    """A function renamed far above the cursor (beyond the prompt's window) is shown from the ring."""
    filler = "".join(f"VALUE_{n} = {n}  # a constant that fills the window\n" for n in range(160))
    text = "def old_name(rows):\n    return len(rows)\n\n\n" + filler + "\n\nrows = []\ntotal = count_"
    async with serving(tmp_path, options={"completion": {"promptTokens": 512}}) as client:
        open_doc(client, text, MAIN)
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=MAIN, version=2),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(types.Position(0, 4), types.Position(0, 12)), text="count_parsed_rows"
                    )
                ],
            )
        )
        client.text_document_did_save(types.DidSaveTextDocumentParams(types.TextDocumentIdentifier(MAIN)))
        renamed = text.replace("old_name", "count_parsed_rows")
        result = await client.text_document_inline_completion_async(
            inline_params(end_position(renamed, "visual-studio-code"), invoked=True, uri=MAIN)
        )
        assert isinstance(result, types.InlineCompletionList) and result.items, result
        assert str(result.items[0].insert_text).startswith("parsed_rows("), result.items[0].insert_text


@pytest.mark.parametrize("yank", [True, False])
async def test_lines_yanked_in_a_file_only_opened_complete_a_name(tmp_path: Path, yank: bool) -> None:
    """The function is in an open file, never edited: its name is unknown unless the user yanks its lines."""
    whole = "import os\n\n\n" + DEFINITION  # the file, yanked whole (ggyG)
    async with serving(tmp_path) as client:
        open_doc(client, whole, HELPERS)
        open_doc(client, USE, MAIN)
        if yank:
            command = types.ExecuteCommandParams("tandem.yanked", [HELPERS, whole])
            await client.workspace_execute_command_async(command)
        params = inline_params(end_position(USE, "visual-studio-code"), invoked=True, uri=MAIN)
        result = await client.text_document_inline_completion_async(params)
        assert isinstance(result, types.InlineCompletionList), result
        suggestion = str(result.items[0].insert_text) if result.items else ""
        assert suggestion.startswith("quarterly_ledgers(") == yank, suggestion
        chunks = (await status(client))["recent"]["chunks"]
        assert chunks == ([{"uri": HELPERS, "lines": 5}] if yank else [])


async def test_a_yank_report_that_is_not_uri_and_text_is_refused_clearly(tmp_path: Path) -> None:
    async with serving(tmp_path) as client:
        with pytest.raises(Exception, match=r"tandem.yanked takes \[uri, text\]"):
            await client.workspace_execute_command_async(types.ExecuteCommandParams("tandem.yanked", [HELPERS]))
        assert (await status(client))["recent"]["chunks"] == []
