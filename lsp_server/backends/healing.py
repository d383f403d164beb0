"""Token healing: when the prompt ends inside a token, back up to its start and let the model choose
a token that begins with the removed text, so `ret|` continues as `urn` instead of a fresh word."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


class TokenIndex:
    """A vocabulary's token texts sorted, so the tokens starting with some bytes are one bisect away."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        order = sorted(range(len(pieces)), key=pieces.__getitem__)
        self._texts = [pieces[i] for i in order]
        self._ids = np.array(order, dtype=np.intc)
        self.pieces = pieces
        """Token id -> its text."""

    def starting_with(self, prefix: bytes) -> npt.NDArray[np.intc]:
        """Ids of the tokens whose text starts with `prefix` (non-empty)."""
        lo = bisect.bisect_left(self._texts, prefix)
        hi = lo
        while hi < len(self._texts) and self._texts[hi].startswith(prefix):
            # Galloping would be faster, but prefixes a cursor ends in have few extensions.
            hi += 1
        return self._ids[lo:hi]


@dataclass(frozen=True)
class Healing:
    """A prompt backed up to a token boundary, and what the first generated token must start with."""

    tokens: list[int]
    """The prompt's tokens without the removed one."""
    removed: str
    """The removed text: the model writes it again, and it is stripped from what is shown."""
    allowed: npt.NDArray[np.intc] | None
    """Token ids the first generated token may take; None when nothing was removed."""


def heal(tokens: list[int], index: TokenIndex) -> Healing:
    """Back up the last token when longer tokens start with its text (the cursor may be inside a word)."""
    if len(tokens) < 2:
        return Healing(tokens, "", None)
    last = index.pieces[tokens[-1]]
    # Never across a line break: line-based stops and post-processing count the lines shown.
    if not last or b"\n" in last:
        return Healing(tokens, "", None)
    try:
        removed = last.decode("utf-8")
    except UnicodeDecodeError:  # part of a multi-byte character
        return Healing(tokens, "", None)
    allowed = index.starting_with(last)
    if len(allowed) < 2:  # only the token itself: nothing to heal
        return Healing(tokens, "", None)
    return Healing(tokens[:-1], removed, allowed)


class Sampling:
    """Greedy choice's helper: masks the first token to the healing set; records the chosen tokens' logprobs."""

    def __init__(self, allowed: npt.NDArray[np.intc] | None) -> None:
        self._allowed = allowed
        self.logprobs: list[float] = []
        """Log-probability of each greedily chosen token, in order."""

    def __call__(self, scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        """The logits to take the greatest of, given the full vocabulary's; called once per token."""
        if self._allowed is not None and not self.logprobs:
            masked = np.full_like(scores, -np.inf)
            masked[self._allowed] = scores[self._allowed]
            scores = masked
        best = float(scores.max())
        self.logprobs.append(-float(np.log(np.exp(scores - best).sum())))
        return scores


def pieces_of(detokenize: Callable[[list[int]], bytes], size: int) -> list[bytes]:
    """Every token's text, by id."""
    return [detokenize([i]) for i in range(size)]
