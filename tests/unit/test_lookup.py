"""Prompt lookup: what is drafted after the last tokens, from where they occurred before."""

from __future__ import annotations

import numpy as np
import pytest

from lsp_server.backends.decoding import draft_by_lookup


@pytest.mark.parametrize(
    ("sequence", "drafted"),
    [
        pytest.param([1, 2, 3, 4, 5, 6, 9, 1, 2, 3], [4, 5, 6], id="three-match-drafts-three"),
        pytest.param([1, 2, 3, 4, 5, 6, 9, 2, 3], [4], id="two-match-drafts-one"),
        pytest.param([1, 2, 3, 4, 9, 3], [4], id="one-match-drafts-one"),
        pytest.param([1, 2, 3, 7, 8, 1, 2, 3, 4, 5, 1, 2, 3], [4, 5, 1], id="latest-occurrence"),
        pytest.param([1, 2, 3, 4, 9, 2, 3, 8, 1, 2, 3], [4, 9, 2], id="longest-match-wins-over-latest"),
        pytest.param([1, 2, 3, 4, 1, 2, 3], [4, 1, 2], id="up-to-the-end"),
        pytest.param([1, 2, 3, 4], [], id="no-earlier-occurrence"),
        pytest.param([5, 5, 5], [5], id="a-run-of-one-token"),
        pytest.param([5], [], id="too-short"),
    ],
)
def test_draft_by_lookup(sequence: list[int], drafted: list[int]) -> None:
    assert draft_by_lookup(np.array(sequence, dtype=np.intc)) == drafted
