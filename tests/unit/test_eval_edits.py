"""`tandem eval --scenario edits`: holes that need a name defined elsewhere, cut deterministically."""

from __future__ import annotations

from pathlib import Path

from lsp_server.tools.evaluate import corpus, cut_edit_holes, definitions_at_top

WINDOW = 4915


def test_edit_holes_need_a_name_the_window_does_not_show() -> None:
    _, files = corpus()
    holes, edits = cut_edit_holes(files, 6, 7, WINDOW)
    assert (holes, edits) == cut_edit_holes(files, 6, 7, WINDOW)  # the same for the same seed
    assert len(holes) == 6
    for hole, edit in zip(holes, edits, strict=True):
        assert edit.name in hole.expected
        assert edit.name not in hole.text[max(0, hole.cursor - WINDOW) : hole.cursor]
        typed = edit.before[: edit.offset] + edit.block + edit.before[edit.offset :]
        if edit.path == hole.path:
            assert typed == hole.text  # typing the definition back gives the file with the hole
        else:
            assert typed == Path(edit.path).read_text(encoding="utf-8", errors="replace")
        assert edit.block.lstrip().startswith(("def ", "class ", "async ", edit.name))


def test_top_level_definitions_with_their_bodies() -> None:
    source = "import os\n\nLIMIT = (\n    1,\n)\n\n\ndef f(x):\n    return x\n\n\nclass C:\n    pass\n"
    found = {name: source[a:b] for name, (a, b) in definitions_at_top(source).items()}
    assert found == {"LIMIT": "LIMIT = (\n    1,\n)\n", "f": "def f(x):\n    return x\n", "C": "class C:\n    pass\n"}
