"""Token healing: which tokens may come first, what is removed from the prompt, logprobs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lsp_server.backends.healing import Sampling, TokenIndex, heal

PIECES = [b"", b"ret", b"return", b"retry", b"re", b" ", b" =", b"urn", b"\n", b"    ", b"        ", b"\xe2\x82", b"x"]
INDEX = TokenIndex(PIECES)
ID = {piece: i for i, piece in enumerate(PIECES)}


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        pytest.param(b"ret", {b"ret", b"return", b"retry"}, id="word-start"),
        pytest.param(b"re", {b"re", b"ret", b"return", b"retry"}, id="shorter"),
        pytest.param(b"retu", {b"return"}, id="one-extension"),
        pytest.param(b" ", {b" ", b" =", b"    ", b"        "}, id="space"),
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
            [ID[b"x"], ID[b" "]], [ID[b"x"]], " ", {b" ", b" =", b"    ", b"        "}, id="after-a-space"
        ),
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
        assert healing.allowed is None
    else:
        assert healing.allowed is not None
        assert {PIECES[i] for i in healing.allowed} == allowed


def test_first_token_is_masked_and_logprobs_are_those_of_the_greedy_token() -> None:
    sampling = Sampling(np.array([ID[b"return"], ID[b"retry"]], dtype=np.intc))
    logits = np.zeros(len(PIECES), dtype=np.single)
    logits[ID[b" ="]] = 5.0  # what an unhealed model would pick
    logits[ID[b"return"]] = 2.0
    first = sampling(logits.copy())
    assert int(np.argmax(first)) == ID[b"return"]
    assert np.isneginf(first[ID[b" ="]])
    # Renormalised over the two allowed tokens: e^2 / (e^2 + e^0).
    assert sampling.logprobs[0] == pytest.approx(2.0 - math.log(math.exp(2.0) + 1.0), rel=1e-5)
    second = sampling(logits.copy())
    assert int(np.argmax(second)) == ID[b" ="]  # only the first token is constrained
    assert len(sampling.logprobs) == 2


def test_index_of_a_large_vocabulary_is_fast() -> None:
    pieces = [f"tok{i}".encode() for i in range(262_144)]
    index = TokenIndex(pieces)
    assert len(index.starting_with(b"tok1234")) == 1 + 10 + 100
