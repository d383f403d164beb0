"""Token healing: which tokens may come first, what is removed from the prompt, logprobs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lsp_server.backends.healing import Constraint, Sampling, TokenIndex, heal

PIECES = [
    b"", b"ret", b"return", b"retry", b"re", b" ", b" =", b"urn", b"\n", b"    ", b"        ", b"\xe2\x82", b"x",
    b"Tool", b"Cho", b"i", b"ice", b"Choice", b"C", b"(", b" Opt", b" Optional", b"\nTool",
]  # fmt: skip
INDEX = TokenIndex(PIECES)
ID = {piece: i for i, piece in enumerate(PIECES)}


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        pytest.param(b"ret", {b"ret", b"return", b"retry"}, id="word-start"),
        pytest.param(b"re", {b"re", b"ret", b"return", b"retry"}, id="shorter"),
        pytest.param(b"retu", {b"return"}, id="one-extension"),
        pytest.param(b" ", {b" ", b" =", b"    ", b"        ", b" Opt", b" Optional"}, id="space"),
        pytest.param(b"    ", {b"    ", b"        "}, id="indentation"),
        pytest.param(b"zzz", set(), id="none"),
    ],
)
def test_tokens_starting_with(prefix: bytes, expected: set[bytes]) -> None:
    assert {PIECES[i] for i in INDEX.starting_with(prefix)} == expected


@pytest.mark.parametrize(
    ("tokens", "kept", "removed", "allowed"),
    [
        pytest.param([ID[b"x"], ID[b"ret"]], [ID[b"x"]], "ret", {b"ret", b"return", b"retry"}, id="inside-a-word"),
        pytest.param(
            [ID[b"x"], ID[b" "]],
            [ID[b"x"]],
            " ",
            {b" ", b" =", b"    ", b"        ", b" Opt", b" Optional"},
            id="after-a-space",
        ),
        pytest.param(
            [ID[b"x"], ID[b"Tool"], ID[b"Cho"], ID[b"i"]],
            [ID[b"x"], ID[b"Tool"]],
            "Choi",
            {b"Cho", b"Choice"},
            id="short-last-token-takes-the-one-before",
        ),
        pytest.param(
            [ID[b"x"], ID[b" Opt"], ID[b"i"]], [ID[b"x"]], " Opti", {b" Opt", b" Optional"}, id="word-after-a-space"
        ),
        pytest.param(
            [ID[b"x"], ID[b"Tool"], ID[b"Cho"]],
            [ID[b"x"], ID[b"Tool"]],
            "Cho",
            {b"Cho", b"Choice"},
            id="longer-last-token-alone",
        ),
        pytest.param(
            [ID[b"x"], ID[b"Tool"], ID[b"re"]],
            [ID[b"x"], ID[b"Tool"]],
            "re",
            {b"re", b"ret", b"return", b"retry"},
            id="two-byte-last-token-alone",
        ),
        pytest.param(
            [ID[b"x"], ID[b"("], ID[b"i"]], [ID[b"x"], ID[b"("]], "i", {b"i", b"ice"}, id="not-past-a-bracket"
        ),
        pytest.param(
            [ID[b"x"], ID[b"\nTool"], ID[b"i"]],
            [ID[b"x"], ID[b"\nTool"]],
            "i",
            {b"i", b"ice"},
            id="not-past-a-line-break",
        ),
        pytest.param([ID[b"Cho"], ID[b"i"]], [ID[b"Cho"]], "i", {b"i", b"ice"}, id="first-token-kept"),
        pytest.param([ID[b"x"], ID[b"return"]], [ID[b"x"], ID[b"return"]], "", None, id="no-longer-token"),
        pytest.param([ID[b"x"], ID[b"\n"]], [ID[b"x"], ID[b"\n"]], "", None, id="never-across-a-line-break"),
        pytest.param([ID[b"x"], ID[b""]], [ID[b"x"], ID[b""]], "", None, id="special-token-has-no-text"),
        pytest.param([ID[b"x"], ID[b"\xe2\x82"]], [ID[b"x"], ID[b"\xe2\x82"]], "", None, id="partial-utf8"),
        pytest.param([ID[b"ret"]], [ID[b"ret"]], "", None, id="only-token-is-kept"),
    ],
)
def test_heal(tokens: list[int], kept: list[int], removed: str, allowed: set[bytes] | None) -> None:
    healing = heal(tokens, INDEX)
    assert healing.tokens == kept
    assert healing.removed == removed
    if allowed is None:
        assert healing.constraint is None
    else:
        assert healing.constraint is not None
        assert {PIECES[i] for i in healing.constraint.allowed(None)} == allowed


def test_first_token_is_masked_and_logprobs_are_those_of_the_greedy_token() -> None:
    sampling = Sampling(Constraint([ID[b"ret"]], INDEX))
    logits = np.zeros(len(PIECES), dtype=np.single)
    logits[ID[b" ="]] = 5.0  # what an unhealed model would pick
    logits[ID[b"return"]] = 2.0
    first = sampling(logits.copy(), None)
    assert int(np.argmax(first)) == ID[b"return"] and sampling.masked
    assert np.isneginf(first[ID[b" ="]])
    # Renormalised over the three allowed tokens: e^2 / (e^2 + e^0 + e^0).
    assert sampling.logprobs[0] == pytest.approx(2.0 - math.log(math.exp(2.0) + 2.0), rel=1e-5)
    second = sampling(logits.copy(), ID[b"return"])
    assert int(np.argmax(second)) == ID[b" ="] and not sampling.masked  # the removed text is written: free
    assert len(sampling.logprobs) == 2


def test_tokens_are_masked_until_they_have_written_the_removed_text_again() -> None:
    sampling = Sampling(Constraint([ID[b"Cho"], ID[b"i"]], INDEX))
    logits = np.zeros(len(PIECES), dtype=np.single)
    logits[ID[b" ="]] = 9.0
    logits[ID[b"Cho"]] = 3.0
    logits[ID[b"Choice"]] = 2.0
    logits[ID[b"ice"]] = 1.0
    ids: list[int] = []
    for _ in range(3):
        ids.append(int(np.argmax(sampling(logits.copy(), ids[-1] if ids else None))))
    # `Cho` as removed, then a token starting with the rest (`i`), then the model is free.
    assert [PIECES[i] for i in ids] == [b"Cho", b"ice", b" ="]


@pytest.mark.parametrize(
    ("generated", "allowed"),
    [
        pytest.param([], {b"Cho", b"Choice"}, id="first"),
        pytest.param([b"Cho"], {b"i", b"ice"}, id="removed-token-again"),
        pytest.param([b"Choice"], None, id="one-token-past-the-removed-text"),
        pytest.param([b"Cho", b"i"], None, id="removed-tokens-again"),
        pytest.param([b"Cho", b"ice"], None, id="extended"),
    ],
)
def test_constraint_after_each_generated_token(generated: list[bytes], allowed: set[bytes] | None) -> None:
    constraint = Constraint([ID[b"Cho"], ID[b"i"]], INDEX)
    result = constraint.allowed(None)
    for piece in generated:
        result = constraint.allowed(ID[piece])
    assert (None if result is None else {PIECES[i] for i in result}) == allowed


def test_index_of_a_large_vocabulary_is_fast() -> None:
    pieces = [f"tok{i}".encode() for i in range(262_144)]
    index = TokenIndex(pieces)
    assert len(index.starting_with(b"tok1234")) == 1 + 10 + 100
