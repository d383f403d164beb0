"""Token healing: when the prompt ends inside a token, back up to its start and let the model choose
a token that begins with the removed text, so `ret|` continues as `urn` instead of a fresh word."""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_WORD = re.compile(rb"[ \t]?\w+")
_SHORT = 1
"""The word's earlier token is backed up over too only when the last one is this short: ` Opt|i` is a split
the tokenizer would not make for ` Optional`, which one token does not heal; backing up over longer endings
(`typ|in`, `discrimin|ator`) lets a small model write another word (measured on `tandem eval`)."""


class TokenIndex:
    """A vocabulary's token texts sorted, so the tokens starting with some bytes are one bisect away."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        order = sorted(range(len(pieces)), key=pieces.__getitem__)
        self._texts = [pieces[i] for i in order]
        self._ids = np.array(order, dtype=np.intc)
        self.pieces = pieces
        """Token id -> its text."""

    def starting_with(self, prefix: bytes) -> npt.NDArray[np.intc]:
        """Ids of the tokens whose text starts with `prefix` (non-empty); a view, not a copy."""
        lo = bisect.bisect_left(self._texts, prefix)
        # The texts starting with `prefix` sort below the least text that is greater than all of them: the
        # prefix without its trailing 0xff bytes, its last byte raised by one (a space has ~137k extensions).
        stem = prefix.rstrip(b"\xff")
        hi = len(self._texts) if not stem else bisect.bisect_left(self._texts, stem[:-1] + bytes([stem[-1] + 1]), lo)
        return self._ids[lo:hi]


class Constraint:
    """What the first generated tokens may be: together they must write the removed tokens' text again."""

    def __init__(self, removed: Sequence[int], index: TokenIndex) -> None:
        self._start = tuple(removed)
        self._removed = list(removed)
        self._left = b"".join(index.pieces[token] for token in removed)
        self._index = index

    def anew(self) -> Constraint:
        """The same constraint, from its start."""
        return Constraint(self._start, self._index)

    def allowed(self, previous: int | None) -> npt.NDArray[np.intc] | None:
        """Token ids the next token may take, given the token generated last (None before the first);
        None once the removed text is written."""
        if previous is not None:
            piece = self._index.pieces[previous]
            self._left = self._left[len(piece) :] if self._left.startswith(piece) else b""
            if self._removed and previous == self._removed[0]:
                del self._removed[0]
            else:
                self._removed.clear()
        if not self._left:
            return None
        # A token that covers the rest of the removed text and maybe more, or the next removed token as it was.
        covering = self._index.starting_with(self._left)
        if not self._removed or self._index.pieces[self._removed[0]].startswith(self._left):
            return covering
        return np.append(covering, np.intc(self._removed[0]))


@dataclass(frozen=True)
class Healing:
    """A prompt backed up to a token boundary, and what the first generated tokens must start with."""

    tokens: list[int]
    """The prompt's tokens without the removed ones."""
    removed: str
    """The removed text: the model writes it again, and it is stripped from what is shown."""
    constraint: Constraint | None
    """What the first generated tokens may be; None when nothing was removed."""


def heal(tokens: list[int], index: TokenIndex) -> Healing:
    """Back up the last token when longer tokens start with its text (the cursor may be inside a word),
    and over the word's earlier tokens when the last is short (`Cho|i` may go on as `Choice`)."""
    removed = b""
    count = 0
    while count < len(tokens) - 1:
        piece = index.pieces[tokens[-1 - count]]
        # Never across a line break: line-based stops and post-processing count the lines shown.
        if not piece or b"\n" in piece or (count and not _WORD.fullmatch(piece + removed)):
            break
        if count and len(removed) > _SHORT:
            break
        removed = piece + removed
        count += 1
    if count == 1 and len(index.starting_with(removed)) < 2:  # only the token itself: nothing to heal
        count = 0
    try:
        text = removed.decode("utf-8")
    except UnicodeDecodeError:  # part of a multi-byte character
        count = 0
    if count == 0:
        return Healing(tokens, "", None)
    return Healing(tokens[:-count], text, Constraint(tokens[-count:], index))


class Sampling:
    """Greedy choice's helper: masks the first tokens to the healing constraint; records the chosen tokens' logprobs."""

    def __init__(self, constraint: Constraint | None) -> None:
        self._constraint = constraint
        self.logprobs: list[float] = []
        """Log-probability of each greedily chosen token, in order."""
        self.masked = False
        """Whether the last token was chosen under the constraint."""

    def __call__(self, scores: npt.NDArray[np.single], previous: int | None) -> npt.NDArray[np.single]:
        """The logits to take the greatest of, given the full vocabulary's and the token chosen before this one
        (None for the first)."""
        self.masked = False
        if self._constraint is not None:
            allowed = self._constraint.allowed(previous)
            if allowed is None:
                self._constraint = None
            else:
                masked = np.full_like(scores, -np.inf)
                masked[allowed] = scores[allowed]
                scores = masked
                self.masked = True
        best = float(scores.max())
        self.logprobs.append(-float(np.log(np.exp(scores - best).sum())))
        return scores


def pieces_of(detokenize: Callable[[list[int]], bytes], size: int) -> list[bytes]:
    """Every token's text, by id."""
    return [detokenize([i]) for i in range(size)]
