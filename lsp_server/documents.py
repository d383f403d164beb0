"""Open documents and LSP position conversion (utf-8, utf-16 or utf-32 code units)."""

from __future__ import annotations

import copy
import re
from itertools import accumulate, islice

_SURROGATE = re.compile("[\ud800-\udfff]")


class PositionError(ValueError):
    """A position that does not exist in the document."""


def clean(text: str) -> str:
    """`text` with every lone UTF-16 surrogate (a JSON `\\udc80` escape) replaced by U+FFFD.

    No encoder takes a lone surrogate, so the model's tokenizer would fail on it. U+FFFD keeps the
    client's positions: one utf-16 unit and one code point like the surrogate, and in utf-8 the
    three bytes a surrogate takes when an editor encodes it anyway (WTF-8).
    """
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


class Document:
    """The editor's view of one open file.

    The text is kept as lines as well, so that an edit or a position lookup costs the size of the
    edit and of its line, not of the document (a 50 MB file is edited at keystroke speed).
    """

    _text: str | None
    _split: list[str] | None
    """The text split at '\\n', made when first needed."""
    _starts: list[int]
    """Offsets in the text where lines 0, 1, ... start, known up to the first line edited since."""

    def __init__(self, uri: str, language_id: str, version: int, text: str) -> None:
        self.uri = uri
        self.language_id = language_id
        self.version = version
        self.text = text

    @property
    def text(self) -> str:
        """The whole text (joined from the lines once after each edit)."""
        if self._text is None:
            self._text = "\n".join(self._lines())
        return self._text

    @text.setter
    def text(self, text: str) -> None:
        self._text = clean(text)
        self._split = None
        self._starts = [0]

    def snapshot(self) -> Document:
        """A copy that later edits leave alone; copies the list of lines, not the text."""
        snapshot = copy.copy(self)
        snapshot._split = None if self._split is None else list(self._split)
        snapshot._starts = list(self._starts)
        return snapshot

    def offset_at(self, line: int, character: int, encoding: str) -> int:
        """Index into `text` of an LSP position; a character past the line's end means its end."""
        lines = self._lines()
        column = _column(lines, line, character, encoding)
        starts = self._starts
        if line >= len(starts):
            known = len(starts) - 1
            more = accumulate((len(text) + 1 for text in lines[known:line]), initial=starts[known])
            starts.extend(islice(more, 1, None))
        return starts[line] + column

    def apply_change(
        self, new_text: str, start: tuple[int, int] | None, end: tuple[int, int] | None, encoding: str
    ) -> None:
        """Apply one `didChange` content change (a full replacement when there is no range)."""
        if start is None or end is None:
            self.text = new_text
            return
        lines = self._lines()
        begin, finish = _column(lines, *start, encoding), _column(lines, *end, encoding)
        if (end[0], finish) < (start[0], begin):
            raise PositionError("change range ends before it starts")
        edited = lines[start[0]][:begin] + clean(new_text) + lines[end[0]][finish:]
        lines[start[0] : end[0] + 1] = edited.split("\n")
        self._text = None
        del self._starts[start[0] + 1 :]

    def _lines(self) -> list[str]:
        if self._split is None:
            self._split = self.text.split("\n")
        return self._split


def _column(lines: list[str], line: int, character: int, encoding: str) -> int:
    """Index into `lines[line]` of a position on that line, clamped to the line's end."""
    if line < 0 or character < 0:
        raise PositionError(f"negative position {line}:{character}")
    if line >= len(lines):
        raise PositionError(f"line {line} is past the end of the document ({len(lines)} lines)")
    return _index_in_line(lines[line], character, encoding)


def _index_in_line(text: str, character: int, encoding: str) -> int:
    """Index into one line's `text` (no '\\n') of `character` code units; '\\r' ends a line too."""
    end = len(text) - 1 if text.endswith("\r") else len(text)
    if encoding == "utf-32" or text.isascii():  # one unit per character in every encoding
        return min(character, end)
    count = offset = 0
    while offset < end and count < character:
        count += units(text[offset], encoding)
        offset += 1
    return offset


def units(text: str, encoding: str) -> int:
    """Length of `text` in the code units of an LSP position encoding."""
    if encoding == "utf-8":
        return len(text.encode("utf-8", "surrogatepass"))
    if encoding == "utf-16":
        return len(text.encode("utf-16-le", "surrogatepass")) // 2
    return len(text)


def characters(text: str, length: int, encoding: str) -> int:
    """How many characters of `text` its first `length` code units of `encoding` hold (a character cut is out)."""
    for count, char in enumerate(text):
        length -= units(char, encoding)
        if length < 0:
            return count
    return len(text)


def offset_at(text: str, line: int, character: int, encoding: str) -> int:
    """Index into `text` of an LSP position; a character past the line's end means its end."""
    if line < 0 or character < 0:
        raise PositionError(f"negative position {line}:{character}")
    start = _line_start(text, line)
    end = text.find("\n", start)
    return start + _index_in_line(text[start : len(text) if end < 0 else end], character, encoding)


def span_at(text: str, start: tuple[int, int], end: tuple[int, int], encoding: str) -> tuple[int, int]:
    """Indexes into `text` of an LSP range's two ends."""
    return offset_at(text, *start, encoding), offset_at(text, *end, encoding)


def apply_change(
    text: str, new_text: str, start: tuple[int, int] | None, end: tuple[int, int] | None, encoding: str
) -> str:
    """`text` after one `didChange` content change; costs a copy of the text (`Document.apply_change` does not)."""
    if start is None or end is None:
        return clean(new_text)
    begin, finish = span_at(text, start, end, encoding)
    if finish < begin:
        raise PositionError("change range ends before it starts")
    return text[:begin] + clean(new_text) + text[finish:]


def _line_start(text: str, line: int) -> int:
    """Offset where `line` starts; only '\\n' ends a line ('\\r\\n' ends with it too)."""
    lines = text.count("\n") + 1
    if line >= lines:
        raise PositionError(f"line {line} is past the end of the document ({lines} lines)")
    if line > lines // 2:  # walk from the nearer end: typing at the end of a long file is common
        start = len(text)
        for _ in range(lines - line):
            start = text.rfind("\n", 0, start)
        return start + 1
    start = 0
    for _ in range(line):
        start = text.find("\n", start) + 1
    return start
