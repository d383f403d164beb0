"""What the user just did: a bounded ring of chunks of code around recent edits, for completion prompts.

Like llama.vim's ring buffer: a chunk is the region around an edit, cut once the user has moved away
from it (an edit elsewhere, a completion far from it or in another file, a save, a close); a new
chunk evicts the ones it nearly repeats (and older states of its own region), chunks grow old and
leave, and at a request the chunks that repeat the code around the cursor leave (the prompt shows
that code already: a copy of it makes a small model repeat it). The ring changes only at those
moments, never while the user types in one place, so the prompt's part that shows it stays
byte-identical and the model's KV cache stays reusable.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

NEAR_LINES = 8
"""An edit this close to the region being edited (in lines) extends it rather than ending it."""
CHUNK_LINES = 16
"""Most lines of one chunk."""
MAX_AGE_S = 30 * 60.0
"""A chunk older than this leaves the ring."""
_MARGIN = 2
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Chunk:
    """Lines of one file around a recent edit."""

    uri: str
    text: str
    """Whole lines, each ending with a newline."""
    at: float
    """When it was cut (the ring's clock)."""
    words: frozenset[str] = field(default=frozenset(), compare=False, repr=False)


@dataclass
class _Region:
    uri: str
    first: int
    last: int
    """Lines of the document being edited (inclusive), as of its latest edit."""


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """How much two texts share, by their sets of words: 2|A∩B| / (|A|+|B|) (llama.vim's measure); 1 for two empties."""
    if not a and not b:
        return 1.0
    return 2 * len(a & b) / (len(a) + len(b))


def display_path(uri: str, root: str) -> str:
    """How a prompt names the file of `uri`: its path in the workspace folder `root`, else its file name."""
    path = unquote(urlparse(uri).path)
    if root and path.startswith(root.rstrip(os.sep) + "/"):
        return path[len(root.rstrip(os.sep)) + 1 :]
    return path.rsplit("/", 1)[-1]


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text))


class RecentChunks:
    """One workspace's ring of chunks, oldest first."""

    def __init__(self, most: int = 8, clock: Callable[[], float] = time.monotonic) -> None:
        self.most = most
        """Most chunks kept; 0 keeps none."""
        self.evicted = 0
        """Chunks that left because a newer one or the code at the cursor repeated them."""
        self._clock = clock
        self._chunks: list[Chunk] = []
        self._editing: _Region | None = None
        self._left: list[_Region] = []
        """Regions the user moved away from, cut at the next request (which brings the texts)."""

    def status(self) -> dict[str, object]:
        """What `tandem.status` shows of the ring: its chunks (file and lines) and how many were evicted."""
        return {"chunks": [{"uri": c.uri, "lines": c.text.count("\n")} for c in self._chunks], "evicted": self.evicted}

    def edited(self, uri: str, first: int, removed: int, inserted: int) -> None:
        """An edit of `uri` replaced lines `first`..`first + removed` by `inserted` + 1 lines' worth of text."""
        if self.most == 0:
            return
        last = first + inserted
        region = self._editing
        if region is not None and region.uri == uri and region.first - NEAR_LINES <= first <= region.last + NEAR_LINES:
            shifted = region.last + inserted - removed if first <= region.last else region.last
            region.first, region.last = min(region.first, first), max(shifted, last)
            return
        if region is not None:
            self._left.append(region)
        self._editing = _Region(uri, first, last)

    def saved(self, uri: str, text: str) -> None:
        """`uri` was saved with `text`: the region edited there becomes a chunk now."""
        self._cut_regions({uri: text}, lambda r: r.uri == uri)

    def closed(self, uri: str, text: str) -> None:
        """`uri` was closed: its regions become chunks while its text is known."""
        self.saved(uri, text)

    def yanked(self, uri: str, text: str) -> None:
        """The user yanked or copied `text` from `uri`: three lines or more become a chunk (its first
        CHUNK_LINES); less is a word or a line, not context (llama.vim's rule)."""
        lines = text.strip("\r\n").splitlines()
        self._keep(uri, lines[:CHUNK_LINES] if len(lines) >= 3 else [])

    def context(self, uri: str, text: str, cursor: int, others: Mapping[str, str]) -> tuple[Chunk, ...]:
        """The chunks for a completion at `cursor` in `uri`, oldest first; `others` are other open documents' texts."""
        if self.most == 0:
            return ()
        line = text.count("\n", 0, cursor)
        editing = self._editing
        texts = {**others, uri: text}
        self._cut_regions(
            texts,
            lambda r: r is not editing or r.uri != uri or not r.first - NEAR_LINES <= line <= r.last + NEAR_LINES,
        )
        now = self._clock()
        kept = [c for c in self._chunks if now - c.at <= MAX_AGE_S][-self.most :]
        # The finished lines around the cursor, not the line being typed: stable while the user types on it.
        lines = text.split("\n")
        around = _words("\n".join(lines[max(0, line - CHUNK_LINES) : line] + lines[line + 1 : line + CHUNK_LINES]))
        fresh = [c for c in kept if c.uri != uri or similarity(c.words, around) <= 0.5]
        self.evicted += len(kept) - len(fresh)
        self._chunks = fresh
        return tuple(fresh)

    def _cut_regions(self, texts: Mapping[str, str], due: Callable[[_Region], bool]) -> None:
        regions = [*self._left, *([self._editing] if self._editing is not None else [])]
        for region in regions:
            if not due(region):
                continue
            if region is self._editing:
                self._editing = None
            else:
                self._left.remove(region)
            if region.uri in texts:
                self._add(region, texts[region.uri])

    def _add(self, region: _Region, text: str) -> None:
        lines = text.split("\n")
        first = max(0, region.first - _MARGIN)
        last = min(len(lines) - 1, region.last + _MARGIN, first + CHUNK_LINES - 1)
        self._keep(region.uri, lines[first : last + 1])

    def _keep(self, uri: str, body: list[str]) -> None:
        """`body`'s lines of `uri`, blank lines around them left out, as the newest chunk."""
        if self.most == 0:
            return
        while body and not body[-1].strip():
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
        if not body:
            return
        chunk_text = "\n".join(body) + "\n"
        words = _words(chunk_text)
        chunk = Chunk(uri, chunk_text, self._clock(), words)
        # A chunk of the same file that shares half its words is an older state of this region.
        kept = [c for c in self._chunks if similarity(c.words, words) <= (0.5 if c.uri == uri else 0.9)]
        self.evicted += len(self._chunks) - len(kept)
        kept.append(chunk)
        self._chunks = kept[-self.most :]
