"""Documents: positions in utf-8, utf-16 and utf-32 units, edits, and text no encoder takes."""

from __future__ import annotations

import random

import pytest

from lsp_server.documents import (
    Document,
    PositionError,
    apply_change,
    characters,
    clean,
    offset_at,
    span_at,
    units,
)

ENCODINGS = ["utf-8", "utf-16", "utf-32"]
TEXT = "import os\r\nname = 'Grüße 😀!'\n\ndef f():\n    return 1"
"""CRLF on the first line; on the second, ü and ß take 2 utf-8 bytes, 😀 4 bytes and 2 utf-16 units."""


@pytest.mark.parametrize(
    ("line", "units_by_encoding", "expected"),
    [
        pytest.param(0, {"utf-8": 3, "utf-16": 3, "utf-32": 3}, 3, id="ascii"),
        pytest.param(0, {"utf-8": 99, "utf-16": 99, "utf-32": 99}, 9, id="past-the-end-stops-before-cr"),
        pytest.param(1, {"utf-8": 12, "utf-16": 11, "utf-32": 11}, 11 + 11, id="after-u-umlaut"),
        pytest.param(1, {"utf-8": 20, "utf-16": 16, "utf-32": 15}, 11 + 15, id="after-emoji"),
        pytest.param(1, {"utf-8": 99, "utf-16": 99, "utf-32": 99}, 11 + 17, id="past-the-end-non-ascii"),
        pytest.param(2, {"utf-8": 5, "utf-16": 5, "utf-32": 5}, 11 + 18, id="empty-line"),
        pytest.param(4, {"utf-8": 4, "utf-16": 4, "utf-32": 4}, 11 + 18 + 1 + 9 + 4, id="last-line"),
    ],
)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_offset_at(line: int, units_by_encoding: dict[str, int], expected: int, encoding: str) -> None:
    character = units_by_encoding[encoding]
    assert offset_at(TEXT, line, character, encoding) == expected
    assert Document("u", "python", 1, TEXT).offset_at(line, character, encoding) == expected


@pytest.mark.parametrize(
    ("line", "character", "message"),
    [
        pytest.param(5, 0, r"line 5 is past the end of the document \(5 lines\)", id="past-the-last-line"),
        pytest.param(-1, 0, "negative position -1:0", id="negative-line"),
        pytest.param(0, -3, "negative position 0:-3", id="negative-character"),
    ],
)
def test_positions_that_do_not_exist(line: int, character: int, message: str) -> None:
    with pytest.raises(PositionError, match=message):
        offset_at(TEXT, line, character, "utf-16")
    with pytest.raises(PositionError, match=message):
        Document("u", "python", 1, TEXT).offset_at(line, character, "utf-16")


@pytest.mark.parametrize(
    ("start", "end", "new_text", "expected"),
    [
        pytest.param((4, 12), (4, 12), "x", TEXT + "x", id="type-at-the-end"),
        pytest.param((0, 0), (0, 0), "#!\n", "#!\n" + TEXT, id="insert-a-line-at-the-top"),
        pytest.param((0, 9), (3, 8), "", "import os\n    return 1", id="delete-across-lines-and-cr"),
        pytest.param((2, 0), (2, 0), "a\nb\n", TEXT.replace("\n\n", "\na\nb\n\n"), id="insert-lines"),
        pytest.param((4, 10), (4, 99), " 2", TEXT.replace("return 1", "return 2"), id="replace-to-past-the-end"),
    ],
)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_apply_change(
    start: tuple[int, int], end: tuple[int, int], new_text: str, expected: str, encoding: str
) -> None:
    assert apply_change(TEXT, new_text, start, end, encoding) == expected
    doc = Document("u", "python", 1, TEXT)
    doc.apply_change(new_text, start, end, encoding)
    assert doc.text == expected


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_edits_after_the_emoji_count_its_units(encoding: str) -> None:
    after_emoji = {"utf-8": 20, "utf-16": 16, "utf-32": 15}[encoding]
    doc = Document("u", "python", 1, TEXT)
    doc.apply_change("", (1, after_emoji - units("😀", encoding)), (1, after_emoji), encoding)
    assert doc.text == TEXT.replace("😀", "")


def test_a_reversed_range_is_refused_and_changes_nothing() -> None:
    doc = Document("u", "python", 1, TEXT)
    with pytest.raises(PositionError, match="change range ends before it starts"):
        doc.apply_change("x", (3, 2), (1, 0), "utf-16")
    with pytest.raises(PositionError, match="change range ends before it starts"):
        apply_change(TEXT, "x", (3, 2), (1, 0), "utf-16")
    with pytest.raises(PositionError, match="past the end"):
        doc.apply_change("x", (1, 0), (9, 0), "utf-16")
    assert doc.text == TEXT


def test_full_replacement() -> None:
    doc = Document("u", "python", 1, TEXT)
    doc.offset_at(4, 0, "utf-8")
    doc.apply_change("a\nb", None, None, "utf-8")
    assert doc.text == "a\nb" and doc.offset_at(1, 1, "utf-8") == 3
    assert apply_change(TEXT, "a\nb", None, None, "utf-8") == "a\nb"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_random_edits_agree_with_editing_the_whole_string(encoding: str) -> None:
    """Edits anywhere, then positions anywhere: the lines kept and the offsets known stay right."""
    rng = random.Random(20)
    pieces = ["a", "é", "😀", "\n", "\r\n", "  ", "def x():", "\n\n"]
    text = "".join(rng.choice(pieces) for _ in range(300))
    doc = Document("u", "python", 1, text)

    def position() -> tuple[int, int]:
        lines = text.split("\n")
        line = rng.randrange(len(lines))
        return line, rng.randrange(units(lines[line], encoding) + 3)

    for _ in range(400):
        start, end = sorted([position(), position()])
        new_text = "".join(rng.choice(pieces) for _ in range(rng.randrange(4)))
        try:
            text = apply_change(text, new_text, start, end, encoding)
        except PositionError:  # sorted by units, the two ends may still cross inside a CRLF or an emoji
            with pytest.raises(PositionError):
                doc.apply_change(new_text, start, end, encoding)
            continue
        doc.apply_change(new_text, start, end, encoding)
        line, character = position()
        assert doc.offset_at(line, character, encoding) == offset_at(text, line, character, encoding)
        if rng.random() < 0.2:
            assert doc.text == text
    assert doc.text == text


def test_a_snapshot_keeps_its_text_while_the_document_changes() -> None:
    doc = Document("u", "python", 1, TEXT)
    doc.offset_at(4, 0, "utf-16")
    snapshot = doc.snapshot()
    doc.apply_change("x", (0, 0), (0, 0), "utf-16")
    doc.version = 2
    assert (snapshot.text, snapshot.version) == (TEXT, 1)
    assert snapshot.offset_at(4, 12, "utf-16") == len(TEXT)
    assert doc.offset_at(4, 12, "utf-16") == len(TEXT) + 1


LONE = "# \udc80x\ndef f(a):\n    "
"""What a JSON `\\udc80` escape in didOpen gives: a lone low surrogate, which no encoder takes."""


def test_lone_surrogates_are_replaced_wherever_text_enters() -> None:
    assert clean(LONE) == "# \ufffdx\ndef f(a):\n    "
    assert clean("a\ud83d\ude00b \ud800") == "a\ufffd\ufffdb \ufffd"  # a pair split in two stays two units
    ascii_text = "plain"
    assert clean(ascii_text) is ascii_text
    doc = Document("u", "python", 1, LONE)
    assert doc.text == clean(LONE)
    doc.apply_change("\ud800", (2, 4), (2, 4), "utf-16")
    assert doc.text.endswith("    \ufffd")
    doc.text = "\udfff"
    assert doc.text == "\ufffd"
    assert apply_change("ab", "\udc80", (0, 1), (0, 1), "utf-8") == "a\ufffdb"
    assert apply_change("ab", "\udc80", None, None, "utf-8") == "\ufffd"
    doc.text.encode("utf-8")  # what the tokenizer does


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_replacing_a_lone_surrogate_keeps_the_clients_positions(encoding: str) -> None:
    """The client counts the surrogate as 1 utf-16 unit, 1 code point, 3 bytes of (WTF-)8: so does U+FFFD."""
    after = units("# \udc80", encoding)
    assert after == units("# \ufffd", encoding)
    doc = Document("u", "python", 1, LONE)
    assert doc.text[doc.offset_at(0, after, encoding)] == "x"
    assert span_at(doc.text, (0, after), (0, after + 1), encoding) == (3, 4)


@pytest.mark.parametrize(
    ("length", "encoding", "expected"),
    [
        pytest.param(3, "utf-8", 2, id="utf-8-after-u-umlaut"),
        pytest.param(2, "utf-8", 1, id="utf-8-cuts-no-character"),
        pytest.param(4, "utf-16", 4, id="utf-16-before-emoji"),
        pytest.param(5, "utf-16", 4, id="utf-16-half-an-emoji"),
        pytest.param(6, "utf-16", 5, id="utf-16-after-emoji"),
        pytest.param(10, "utf-32", 6, id="past-the-end"),
    ],
)
def test_characters_in_code_units(length: int, encoding: str, expected: int) -> None:
    assert characters("aüb.😀c", length, encoding) == expected
