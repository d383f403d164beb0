"""Open documents and LSP position conversion (utf-8, utf-16 or utf-32 code units)."""

from __future__ import annotations

from dataclasses import dataclass


class PositionError(ValueError):
    """A position that does not exist in the document."""


@dataclass
class Document:
    """The editor's view of one open file."""

    uri: str
    language_id: str
    version: int
    text: str


def _line_start(text: str, line: int) -> int:
    """Offset where `line` starts; only '\\n' ends a line ('\\r\\n' ends with it too)."""
    start = 0
    for _ in range(line):
        found = text.find("\n", start)
        if found < 0:
            raise PositionError(f"line {line} is past the end of the document ({text.count(chr(10)) + 1} lines)")
        start = found + 1
    return start


def units(text: str, encoding: str) -> int:
    """Length of `text` in the code units of an LSP position encoding."""
    if encoding == "utf-8":
        return len(text.encode("utf-8"))
    if encoding == "utf-16":
        return len(text.encode("utf-16-le")) // 2
    return len(text)


def offset_at(text: str, line: int, character: int, encoding: str) -> int:
    """Index into `text` of an LSP position; a character past the line's end means its end."""
    if line < 0 or character < 0:
        raise PositionError(f"negative position {line}:{character}")
    start = _line_start(text, line)
    end = text.find("\n", start)
    end = len(text) if end < 0 else end
    if end > start and text[end - 1] == "\r":
        end -= 1
    if encoding == "utf-32":
        return min(start + character, end)
    count = 0
    offset = start
    while offset < end and count < character:
        count += units(text[offset], encoding)
        offset += 1
    return offset


def span_at(text: str, start: tuple[int, int], end: tuple[int, int], encoding: str) -> tuple[int, int]:
    """Indexes into `text` of an LSP range's two ends."""
    return offset_at(text, *start, encoding), offset_at(text, *end, encoding)


def apply_change(
    text: str, new_text: str, start: tuple[int, int] | None, end: tuple[int, int] | None, encoding: str
) -> str:
    """Apply one `didChange` content change (a full replacement when there is no range)."""
    if start is None or end is None:
        return new_text
    begin, finish = span_at(text, start, end, encoding)
    if finish < begin:
        raise PositionError("change range ends before it starts")
    return text[:begin] + new_text + text[finish:]
