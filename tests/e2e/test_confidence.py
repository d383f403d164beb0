"""End to end: what the ledger learns of the suggestions kept decides which are worth making, through the real
server, the embedded model and the real ledger file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from lsp_server.completion.confidence import BANDS
from tests.conftest import serving
from tests.e2e.test_acceptance import OTHER, row
from tests.e2e.test_completion import SOURCE, complete, end_position, inline_params, open_doc, status


def never_kept(data_dir: Path, model: str, kind: str, each: int = 400) -> None:
    """Write a history of `each` suggestions of `kind` shown in every band of confidence, none accepted."""
    db = sqlite3.connect(data_dir / "ledger.sqlite3")
    with db:
        db.executemany(
            "INSERT INTO requests (request_id, time, task, backend, model, prompt_tokens, completion_tokens,"
            " outcome, shown, context, mean_logprob) VALUES (?, ?, 'completion', 'local', ?, 100, 10, 'ok', 1, ?, ?)",
            [
                (f"past-{i}-{n}", 1_000_000.0 + n, model, kind, edge - 0.01)
                for i, edge in enumerate((*BANDS, 0.01))
                for n in range(each)
            ],
        )
    db.close()


async def test_suggestions_the_user_never_keeps_are_no_longer_made(tmp_path: Path) -> None:
    editor = "visual-studio-code"
    async with serving(tmp_path, editor, {"completion": {"minConfidence": 0}}) as client:
        open_doc(client, SOURCE)
        items = await complete(client, end_position(SOURCE, editor))
        assert items and items[0].command is not None and items[0].command.arguments
        request_id = items[0].command.arguments[0]
    shown = row(tmp_path, request_id)
    assert (shown["shown"], shown["context"]) == (1, "block-start")
    assert shown["mean_logprob"] is not None and shown["mean_logprob"] < 0

    never_kept(tmp_path, shown["model"], "block-start")
    async with serving(tmp_path, editor, {"completion": {"minConfidence": "auto"}}) as client:
        open_doc(client, SOURCE)
        assert await complete(client, end_position(SOURCE, editor)) == []
        counters = (await status(client))["counters"]
        assert (counters["lowConfidence"], counters["generations"]) == (1, 0)  # nothing decoded for it
        other = SOURCE + "words = text.split()\n    return len("
        open_doc(client, other, OTHER)
        await client.text_document_inline_completion_async(inline_params(end_position(other, editor), True, OTHER))
        assert (await status(client))["counters"]["generations"] == 1  # other kinds of context: as before
