"""The ring of chunks around recent edits, and how prompts show it."""

from __future__ import annotations

import pytest

from lsp_server.completion.prompt import FAMILIES, build_prompt, recent_block
from lsp_server.recent import MAX_AGE_S, Chunk, RecentChunks, display_path, similarity

A = "file:///ws/pkg/a.py"
B = "file:///ws/pkg/b.py"
HELPERS = "import os\n\n\ndef frobnicate(widget, times=2):\n    return widget * times\n\n\nVALUE = 1\n"
USER = "from .a import frobnicate\n\n\ndef main():\n    x = "


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _type_definition(ring: RecentChunks) -> None:
    """Type lines 3-4 of HELPERS (the def) into A, one line per edit."""
    ring.edited(A, 3, 0, 1)
    ring.edited(A, 4, 0, 1)


def test_a_region_becomes_a_chunk_once_the_user_moves_to_another_file() -> None:
    ring = RecentChunks()
    _type_definition(ring)
    assert ring.context(A, HELPERS, HELPERS.index("return"), {}) == ()  # still editing there: no chunk
    chunks = ring.context(B, USER, len(USER), {A: HELPERS})
    assert [c.uri for c in chunks] == [A]
    assert chunks[0].text == "def frobnicate(widget, times=2):\n    return widget * times\n\n\nVALUE = 1\n"


def test_chunks_stay_the_same_while_the_user_types_in_one_place() -> None:
    ring = RecentChunks()
    _type_definition(ring)
    first = ring.context(B, USER, len(USER), {A: HELPERS})
    text = USER
    for key in "frob(1)":
        ring.edited(B, 4, 0, 0)
        text += key
        assert ring.context(B, text, len(text), {A: HELPERS}) == first


def test_an_edit_far_away_in_the_same_file_ends_the_region() -> None:
    ring = RecentChunks()
    long = HELPERS + "\n" * 40 + "def other():\n    pass\n"
    _type_definition(ring)
    ring.edited(A, 48, 0, 0)
    chunks = ring.context(A, long, len(long), {})
    assert [c.text.strip().split("\n")[0] for c in chunks] == ["def frobnicate(widget, times=2):"]


def test_saving_cuts_the_region_and_a_nearly_equal_chunk_replaces_the_older() -> None:
    ring = RecentChunks()
    _type_definition(ring)
    ring.saved(A, HELPERS)
    renamed = HELPERS.replace("times=2", "times=3")
    ring.edited(A, 3, 0, 0)
    ring.saved(A, renamed)
    chunks = ring.context(B, USER, len(USER), {A: renamed})
    assert [("times=3" in c.text) for c in chunks] == [True]
    assert ring.evicted == 1


def test_a_chunk_that_repeats_the_code_at_the_cursor_leaves() -> None:
    ring = RecentChunks()
    _type_definition(ring)
    ring.saved(A, HELPERS)
    assert ring.context(A, HELPERS, len(HELPERS), {}) == ()  # the cursor's surroundings show it already
    assert ring.evicted == 1


def test_old_chunks_leave_and_the_ring_is_bounded() -> None:
    clock = Clock()
    ring = RecentChunks(most=2, clock=clock)
    for n in range(3):
        text = f"def f{n}(alpha{n}, beta{n}):\n    return gamma{n}\n"
        ring.edited(A, 0, 0, 1)
        ring.saved(A, text)
    assert [c.text.split("(")[0] for c in ring.context(B, USER, len(USER), {})] == ["def f1", "def f2"]
    clock.now = MAX_AGE_S + 1
    assert ring.context(B, USER, len(USER), {}) == ()


def test_closing_a_file_keeps_its_edits_and_zero_chunks_keeps_nothing() -> None:
    ring = RecentChunks()
    _type_definition(ring)
    ring.closed(A, HELPERS)
    assert len(ring.context(B, USER, len(USER), {})) == 1
    off = RecentChunks(most=0)
    _type_definition(off)
    assert off.context(B, USER, len(USER), {A: HELPERS}) == ()


def test_a_yank_of_three_lines_or_more_is_a_chunk() -> None:
    ring = RecentChunks()
    ring.yanked(A, "frobnicate")  # a word
    ring.yanked(A, "def frobnicate(widget, times=2):\n    return widget * times\n")  # two lines
    assert ring.context(B, USER, len(USER), {}) == ()
    body = "".join(f"    total += part_{n}\n" for n in range(20))
    ring.yanked(A, "\ndef frobnicate(widget, times=2):\n" + body)
    [chunk] = ring.context(B, USER, len(USER), {})
    first_16 = "def frobnicate(widget, times=2):\n" + body[: body.index("    total += part_15")]
    assert chunk.uri == A and chunk.text == first_16
    ring.yanked(B, "\r\n".join(["def frobnicate(widget, times=2):", *body.splitlines()]))  # the same lines again
    assert [c.uri for c in ring.context(B, USER, len(USER), {})] == [B] and ring.evicted == 1


def test_similarity_counts_shared_words() -> None:
    assert similarity(frozenset("ab"), frozenset("ab")) == 1.0
    assert similarity(frozenset("ab"), frozenset("cd")) == 0.0
    assert similarity(frozenset(), frozenset()) == 1.0


@pytest.mark.parametrize(
    ("uri", "root", "shown"),
    [
        pytest.param("file:///ws/pkg/a.py", "/ws", "pkg/a.py", id="in-workspace"),
        pytest.param("file:///elsewhere/my%20file.py", "/ws", "my file.py", id="outside"),
        pytest.param("untitled:Untitled-1", "", "Untitled-1", id="not-a-file"),
    ],
)
def test_display_path(uri: str, root: str, shown: str) -> None:
    assert display_path(uri, root) == shown


CHUNK = Chunk(A, "def frobnicate(widget):\n    return widget\n", 0.0)


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        pytest.param(
            "qwen2.5-coder",
            "<|repo_name|>ws\n<|file_sep|>pkg/a.py\ndef frobnicate(widget):\n    return widget\n<|file_sep|>pkg/b.py\n"
            "<|fim_prefix|>x = <|fim_suffix|><|fim_middle|>",
            id="qwen-file-separators",
        ),
        pytest.param(
            "starcoder",
            "<repo_name>ws<file_sep>pkg/a.py\ndef frobnicate(widget):\n    return widget\n<file_sep>"
            "<fim_prefix>x = <fim_suffix><fim_middle>",
            id="starcoder2-file-separators",
        ),
        pytest.param(
            "deepseek-coder",
            "<\uff5cfim\u2581begin\uff5c># pkg/a.py (edited):\n# def frobnicate(widget):\n#     return widget\n"
            "x = <\uff5cfim\u2581hole\uff5c><\uff5cfim\u2581end\uff5c>",
            id="fim-without-separators-comments",
        ),
        pytest.param(
            None,
            "# pkg/a.py (edited):\n# def frobnicate(widget):\n#     return widget\nx = ",
            id="prefix-only-comments",
        ),
    ],
)
def test_recent_chunks_in_the_models_format(family: str | None, expected: str) -> None:
    template = None if family is None else FAMILIES[family]
    prompt = build_prompt("x = ", 4, template, 512, recent=[("pkg/a.py", CHUNK)], path="pkg/b.py", repo_name="ws")
    assert prompt.text == expected


def test_no_chunks_leaves_the_prompt_as_it_was() -> None:
    assert build_prompt("x = ", 4, FAMILIES["qwen2.5-coder"], 512, recent=[], path="b.py", repo_name="ws").text == (
        "<|fim_prefix|>x = <|fim_suffix|><|fim_middle|>"
    )


def test_the_newest_chunks_that_fit_the_budget_oldest_first() -> None:
    chunks = [(f"f{n}.py", Chunk(A, f"value_{n} = {'1' * 40}\n", 0.0)) for n in range(5)]
    block = recent_block(chunks, None, "b.py", "", 220)  # three of 72 characters
    assert [line.split()[1] for line in block.splitlines() if line.endswith("(edited):")] == ["f2.py", "f3.py", "f4.py"]
    assert len(block) <= 220


def test_a_gguf_that_names_a_file_separator_gets_llama_servers_layout() -> None:
    from lsp_server.completion.prompt import template_from_gguf

    tokens = {1: "<PRE>", 2: "<SUF>", 3: "<MID>", 4: "<SEP>", 5: "<REPO>"}
    keys = {"pre": 1, "suf": 2, "mid": 3, "sep": 4, "rep": 5}
    metadata = {f"tokenizer.ggml.fim_{k}_token_id": str(v) for k, v in keys.items()}
    template = template_from_gguf(metadata, tokens.__getitem__, "mystery-model")
    assert template is not None and template.repo is not None
    prompt = build_prompt("x = ", 4, template, 512, recent=[("a.py", CHUNK)], path="b.py", repo_name="ws")
    assert prompt.text == (
        "<REPO>ws\n<SEP>a.py\ndef frobnicate(widget):\n    return widget\n<SEP>b.py\n<PRE>x = <SUF><MID>"
    )
