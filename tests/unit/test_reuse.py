"""KV cache reuse: what of the cache a prompt keeps, and which of the model's held tokens it serves again."""

from __future__ import annotations

import pytest

from lsp_server.backends.decoding import Held, reuse
from lsp_server.backends.healing import TokenIndex, heal

PIECES = [b"<s>", b"x", b" =", b" 1", b" ", b"\n", b"re", b"ret", b"return", b"retry"]
INDEX = TokenIndex(PIECES)
ID = {piece: i for i, piece in enumerate(PIECES)}
P = (b"<s>", b"x", b" =", b" 1", b"\n")  # ends at a line break: never healed


def ids(pieces: tuple[bytes, ...]) -> list[int]:
    return [ID[piece] for piece in pieces]


def logprob(token: int) -> float:
    """Each held token's log-probability, told apart by token."""
    return -token / 10


def held(prompt: tuple[bytes, ...], tokens: tuple[bytes, ...], removed: str = "", constrained: int = 0) -> Held:
    return Held(ids(prompt), removed, ids(tokens), [logprob(t) for t in ids(tokens)], constrained)


@pytest.mark.parametrize(
    ("prompt", "old", "cached", "logits", "served", "constrained", "keep", "evaluated"),
    [
        pytest.param(P, None, (), False, (), 0, 0, 5, id="empty-cache"),
        pytest.param(P, held(P, (b"x", b" =")), None, True, (b"x", b" ="), 0, 7, 0, id="same-prompt"),
        pytest.param(
            P, held(P, (b"x", b" =")), None, False, (b"x", b" ="), 0, 6, 0, id="same-prompt-no-logits-at-hand"
        ),
        pytest.param(
            (*P, b"x"), held(P, (b"x", b" =", b" 1")), None, True, (b" =", b" 1"), 0, 8, 0, id="typed-a-held-token"
        ),
        pytest.param((*P, b"x", b" ="), held(P, (b"x", b" =")), None, True, (), 0, 7, 0, id="typed-every-held-token"),
        pytest.param(
            (*P, b"x", b" ="), held(P, (b"x", b" =")), None, False, (), 0, 6, 1, id="typed-all-no-logits-at-hand"
        ),
        pytest.param((*P, b" 1"), held(P, (b"x", b" =")), None, True, (), 0, 5, 1, id="typed-something-else"),
        pytest.param(P[:-1], held(P, (b"x",)), None, True, (), 0, 3, 1, id="deleted-the-last-token"),
        pytest.param(
            (b"<s>", b" 1", b" =", b" 1", b"\n"), held(P, (b"x",)), None, True, (), 0, 1, 4, id="edited-early"
        ),
        pytest.param(P, None, (*P, b"x"), True, (), 0, 4, 1, id="nothing-held-past-the-cache"),
        pytest.param(
            P, held(P, (b"x", b" =")), (*P, b"x", b" 1"), True, (), 0, 4, 1, id="cache-is-not-the-held-continuation"
        ),
        pytest.param(
            (b"<s>", b"x", b"re"),
            held((b"<s>", b"x"), (b"return", b" ="), removed="re", constrained=1),
            None,
            True,
            (b"return", b" ="),
            1,
            4,
            0,
            id="healed-the-same",
        ),
        pytest.param(
            (b"<s>", b"x", b"ret"),
            held((b"<s>", b"x"), (b"return", b" ="), removed="re", constrained=1),
            None,
            True,
            (),
            0,
            1,
            1,
            id="healed-differently",
        ),
        pytest.param(
            (b"<s>", b"x"),
            held((b"<s>", b"x"), (b"return", b" ="), removed="re", constrained=1),
            None,
            True,
            (),
            0,
            1,
            1,
            id="held-under-a-constraint-this-prompt-lacks",
        ),
        pytest.param(
            (b"<s>", b"x", b"return"),
            held((b"<s>", b"x"), (b"return", b" ="), removed="re", constrained=1),
            None,
            True,
            (b" =",),
            0,
            4,
            0,
            id="typed-the-healed-token",
        ),
        pytest.param(
            (b"<s>", b"x", b" "),
            held((b"<s>", b"x"), (b" =", b" 1")),
            None,
            True,
            (b" =", b" 1"),
            1,
            4,
            0,
            id="free-tokens-meet-the-constraint",
        ),
        pytest.param(
            (b"<s>", b"x", b"re"),
            held((b"<s>", b"x"), (b" =", b" 1")),
            None,
            True,
            (),
            0,
            1,
            1,
            id="a-free-token-the-constraint-forbids",
        ),
    ],
)
def test_reuse(
    prompt: tuple[bytes, ...],
    old: Held | None,
    cached: tuple[bytes, ...] | None,
    logits: bool,
    served: tuple[bytes, ...],
    constrained: int,
    keep: int,
    evaluated: int,
) -> None:
    healing = heal(ids(prompt), INDEX)
    cache = ids(cached) if cached is not None else [] if old is None else old.prompt + old.tokens
    before = None if old is None else (list(old.tokens), list(old.logprobs))
    got = reuse(healing, cache, old, len(cache) if logits else -1)
    assert (got.held.tokens, got.held.constrained) == (ids(served), constrained)
    assert (got.keep, got.evaluated) == (keep, evaluated)
    assert got.held.logprobs == [logprob(t) for t in ids(served)]  # each served token keeps its own
    assert (got.held.prompt, got.held.removed) == (healing.tokens, healing.removed)
    if old is not None:
        assert (old.tokens, old.logprobs) == before  # what the cache held is not changed by deciding
