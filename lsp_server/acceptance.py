"""What became of each suggestion shown: accepted whole or in part, and how much of the accepted text stays.

Fed by the documents' changes (as character offsets), so it knows exactly which accepted characters are still
there: an edit inside accepted text removes what it replaces, and what it inserts is the user's, not accepted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

RETENTION_S = (30.0, 300.0)
"""When the accepted characters still present are counted, in seconds after the accept."""
RETAINED = ("retained_chars_30s", "retained_chars_5m")
"""The ledger column of each retention check."""

Change = tuple[int, int, str]
"""One edit of a document: it replaced offsets [start, end) by this text."""
Columns = dict[str, str | int | float | None]
"""Ledger columns of a completion and their values."""
Record = Callable[[str, Columns], None]
"""Writes ledger columns of the request whose id is given."""


@dataclass
class _Suggestion:
    uri: str
    start: int
    """Where its text goes in the document as it is now (moved by the edits before it)."""
    text: str
    accepted_at: float | None = None
    spans: list[tuple[int, int]] = field(default_factory=list)
    """The accepted characters still present: [start, end) ranges in the document as it is now."""
    checks: int = 0
    """Retention checks done (of RETENTION_S)."""
    next_edit_undoes: bool = False
    """True from the accept until the next edit, which is a reversal if it removes every accepted character."""
    whole: bool = False
    """Accepted whole (the editor ran the item's command)."""

    def retained(self) -> int:
        return sum(end - start for start, end in self.spans)


class Acceptance:
    """Tracks the suggestions shown in each document until their retention is known, and records the outcomes.

    Shown suggestions wait until they are accepted or another suggestion is shown in the same document;
    accepted text is counted `RETENTION_S` after its accept, or when its document closes (whatever is left
    then is what stays: tandem sees no more edits of it).
    """

    def __init__(self, record: Record, clock: Callable[[], float] = time.monotonic) -> None:
        self._record = record
        self._clock = clock
        self._items: dict[str, _Suggestion] = {}
        """By request id."""

    def tracking(self, uri: str) -> bool:
        """Whether edits of `uri` matter (a suggestion of it is shown or its accepted text is being counted)."""
        return any(item.uri == uri for item in self._items.values())

    def suggestion(self, request_id: str) -> tuple[str, str] | None:
        """The document and text of a suggestion shown, while it is tracked."""
        item = self._items.get(request_id)
        return None if item is None else (item.uri, item.text)

    def shown(self, request_id: str, uri: str, start: int, text: str, columns: Columns) -> bool:
        """The editor got `text` to insert at offset `start` of `uri`: it replaces what else was shown there.
        The first time, the ledger row gets `columns` (language, context kind…) too; True then."""
        known = self._items.get(request_id)
        if known is not None and known.accepted_at is not None:
            return False
        for other, item in list(self._items.items()):
            if item.uri == uri and item.accepted_at is None:
                del self._items[other]
        self._items[request_id] = _Suggestion(uri, start, text)
        if known is None:  # a typed-ahead hit shows the rest of the same suggestion again
            self._record(request_id, {"shown": 1, **columns})
        return known is None

    def edited(self, uri: str, changes: Iterable[Change]) -> None:
        """One `didChange` of `uri`: its changes, each in the document as the changes before it left it."""
        items = {request_id: item for request_id, item in self._items.items() if item.uri == uri}
        undoable = [request_id for request_id, item in items.items() if item.next_edit_undoes]
        for start, end, text in changes:
            for request_id, item in items.items():
                if (taken := _taken_next(item, start, end, text)) is not None:
                    self._take(request_id, item, taken)
                    continue
                item.start = _moved(item.start, start, end, len(text))
                item.spans = _edited(item.spans, start, end, len(text))
        for request_id in undoable:
            item = items[request_id]
            item.next_edit_undoes = False
            if not item.spans:
                self._record(request_id, {"reversed": 1})

    def accepted(self, request_id: str, text: str, length: int | None = None) -> int | None:
        """The user accepted the suggestion (`length` characters of it, or all); `text` is its document now.

        Records the characters accepted: those of the suggestion now found where it was shown. Returns the
        offset just after them when the whole suggestion was accepted, else None.
        """
        item = self._items.get(request_id)
        if item is None:
            return None
        wanted = item.text if length is None else item.text[:length]
        found = text[item.start : item.start + len(wanted)]
        matched = next((i for i, (a, b) in enumerate(zip(wanted, found, strict=False)) if a != b), len(found))
        self._take(request_id, item, matched, whole=length is None)
        return item.start + matched if length is None else None

    def _take(self, request_id: str, item: _Suggestion, taken: int, whole: bool = False) -> None:
        """The first `taken` characters of the suggestion are accepted and in the document."""
        item.spans = [(item.start, item.start + taken)] if taken else []
        item.accepted_at = self._clock()
        item.checks = 0
        item.next_edit_undoes = True
        item.whole = item.whole or whole
        columns: Columns = {"accepted_chars": taken}
        if whole:
            columns["accepted"] = 1
        self._record(request_id, columns)

    def due(self) -> float | None:
        """When the next retention check is due (on the clock given), or None when none is."""
        items = self._items.values()
        times = [at + RETENTION_S[item.checks] for item in items if (at := item.accepted_at) is not None]
        return min(times, default=None)

    def check(self) -> None:
        """Record the retention checks that are due."""
        now = self._clock()
        for request_id, item in list(self._items.items()):
            while (
                item.accepted_at is not None
                and item.checks < len(RETENTION_S)
                and item.accepted_at + RETENTION_S[item.checks] <= now
            ):
                self._measure(request_id, item)

    def closed(self, uri: str) -> None:
        """`uri` closed: its accepted text is final, so every check still due is recorded now."""
        for request_id, item in list(self._items.items()):
            if item.uri == uri:
                self._items.pop(request_id)
                while item.accepted_at is not None and item.checks < len(RETENTION_S):
                    self._measure(request_id, item)

    def close(self) -> None:
        """The server stops: record what is left of every accepted suggestion."""
        for uri in {item.uri for item in self._items.values()}:
            self.closed(uri)

    def _measure(self, request_id: str, item: _Suggestion) -> None:
        self._record(request_id, {RETAINED[item.checks]: item.retained()})
        item.checks += 1
        if item.checks == len(RETENTION_S):
            self._items.pop(request_id, None)


def _taken_next(item: _Suggestion, start: int, end: int, text: str) -> int | None:
    """The characters of the suggestion accepted once an insertion of `text` at [start, end) is done, when it
    puts in its next part (an editor's accept-word or accept-line, reported or not); else None.

    One character at a time is typing, not accepting; once accepted whole, the rest is the user's."""
    if item.whole or start != end or len(text) < 2:
        return None
    taken = sum(b - a for a, b in item.spans)
    if item.spans != ([(item.start, item.start + taken)] if taken else []):
        return None  # edited since: what is left is not a start of the suggestion
    if start != item.start + taken or not item.text.startswith(text, taken):
        return None
    return taken + len(text)


def _moved(offset: int, start: int, end: int, inserted: int) -> int:
    """Where `offset` is after the change: text inserted at it goes after it; a change around it takes it to
    the change's start."""
    if offset <= start:
        return offset
    if offset >= end:
        return offset + inserted - (end - start)
    return start


def _edited(spans: list[tuple[int, int]], start: int, end: int, inserted: int) -> list[tuple[int, int]]:
    """The spans after the change: what it replaced is gone, what it inserted is not theirs, the rest moves."""
    shift = inserted - (end - start)
    result = []
    for a, b in spans:
        if b <= start:  # before the change
            result.append((a, b))
        elif a >= end:  # after it
            result.append((a + shift, b + shift))
        else:  # the change cuts it: keep what lies before and after
            if a < start:
                result.append((a, start))
            if b > end:
                result.append((end + shift, b + shift))
    return [(a, b) for a, b in result if b > a]


def replacement(old: str, new: str) -> Change:
    """A whole-text change as the one edit that turns `old` into `new` (their common start and end kept)."""
    limit = min(len(old), len(new))
    head = 0
    while head < limit and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < limit - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    return head, len(old) - tail, new[head : len(new) - tail]
