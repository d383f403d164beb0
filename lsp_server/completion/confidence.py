"""Knowing when not to suggest: how likely a suggestion is to be kept, from where the cursor is and how sure the
model was, learned from what the user kept.

A suggestion falls in a kind of context (`context_kind`) and a band of mean token log-probability. Each (kind,
band) starts from a prior, the share of such suggestions that were exactly right on `tandem eval` (seed 1), and
moves towards what the ledger says this user accepted: the prior counts as `PRIOR_WEIGHT` suggestions shown.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass

KINDS = ("comment", "string", "operator", "block-start", "code")
BANDS = (-1.0, -0.7, -0.45, -0.3, -0.1)
"""Upper edges of the mean log-probability bands; the last band runs up to 0."""
PRIOR: dict[str, tuple[float, ...]] = {
    "comment": (0.0, 0.013, 0.19, 0.251, 0.65, 0.735),
    "string": (0.0, 0.037, 0.059, 0.108, 0.219, 0.806),
    "operator": (0.0, 0.037, 0.094, 0.126, 0.344, 0.912),
    "block-start": (0.0, 0.014, 0.059, 0.146, 0.226, 0.716),
    "code": (0.0, 0.079, 0.064, 0.125, 0.325, 0.83),
}
"""Per kind, the share of suggestions kept in each band: exactly right on `tandem eval --holes 240 --seed 1`
(233 shown), each cell pulled towards its band's share across kinds as if by 5 more suggestions."""
PRIOR_WEIGHT = 20
AUTO = 0.065
"""The threshold `completion.minConfidence: auto` uses: on seed 1, 20 % fewer suggestions shown for one exact
match lost (`tandem eval --scenario confidence`)."""
SURE = 0.2
"""A suggestion this likely to be kept is shown as soon as its first tokens say so (0.5 held back 20 % on
seed 1, 0.2 17 %, but 0.5 held most first words until the line ended: ghost text later in `tandem bench`)."""

_COMMENT_START = ("#", "//", "/*", "*", "--", ";")
_TRAILING_COMMENT = re.compile(r"\s#")
_OPERATOR_END = re.compile(r"(?:[-+*/%=<>!&|^~,(\[{:]|\b(?:and|or|not|in|is|return|yield|await|lambda))\s*$")


def context_kind(before: str, line_prefix: str, block_start: bool) -> str:
    """Where the cursor is: in a comment or docstring, in a string, after an operator, at the start of a block,
    or in other code. `before` is the text before the cursor's line (for docstrings)."""
    if block_start:
        return "block-start"
    if (before.count('"""') + line_prefix.count('"""')) % 2 or (before.count("'''") + line_prefix.count("'''")) % 2:
        return "comment"
    code = _outside_strings(line_prefix)
    if code is None:
        return "string"
    if code.lstrip().startswith(_COMMENT_START) or _TRAILING_COMMENT.search(code):
        return "comment"
    return "operator" if _OPERATOR_END.search(code) else "code"


def _outside_strings(line: str) -> str | None:
    """The line with its string literals blanked; None when it ends inside one."""
    out = []
    quote = ""
    escaped = False
    for ch in line:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
            out.append(" ")
        elif ch in "\"'`":
            quote = ch
            out.append(" ")
        else:
            out.append(ch)
    return None if quote else "".join(out)


def band(mean_logprob: float | None) -> int:
    """The band of a mean log-probability; None (a backend that reports none) is the most confident band."""
    return len(BANDS) if mean_logprob is None else bisect.bisect_right(BANDS, mean_logprob)


@dataclass(frozen=True)
class Outcome:
    """One suggestion shown, as the ledger keeps it: where, how sure, and whether the user took any of it."""

    kind: str
    mean_logprob: float | None
    accepted: bool


class Confidence:
    """The chance that a suggestion is kept, per kind and band: the prior, moved by the outcomes seen."""

    def __init__(self, outcomes: Iterable[Outcome] = ()) -> None:
        self._shown: dict[tuple[str, int], int] = {}
        self._accepted: dict[tuple[str, int], int] = {}
        for outcome in outcomes:
            self.shown(outcome.kind, outcome.mean_logprob)
            if outcome.accepted:
                self.accepted(outcome.kind, outcome.mean_logprob)

    def shown(self, kind: str, mean_logprob: float | None) -> None:
        key = (kind, band(mean_logprob))
        self._shown[key] = self._shown.get(key, 0) + 1

    def accepted(self, kind: str, mean_logprob: float | None) -> None:
        key = (kind, band(mean_logprob))
        self._accepted[key] = self._accepted.get(key, 0) + 1

    def estimate(self, kind: str, mean_logprob: float | None) -> float:
        """The chance a suggestion of this kind and mean log-probability is kept."""
        key = (kind, band(mean_logprob))
        prior = PRIOR.get(kind, PRIOR["code"])[key[1]]
        return (self._accepted.get(key, 0) + PRIOR_WEIGHT * prior) / (self._shown.get(key, 0) + PRIOR_WEIGHT)

    def worth_generating(self, kind: str, threshold: float) -> bool:
        """Whether any suggestion of this kind, however sure, would be kept often enough to show."""
        return any(self.estimate(kind, edge) >= threshold for edge in (*BANDS, None))
