"""Knowing when not to suggest: the kinds of context, what the ledger's outcomes teach, and the engine's gate."""

from __future__ import annotations

import pytest

from lsp_server.completion.confidence import AUTO, BANDS, PRIOR, Confidence, Outcome, band, context_kind
from lsp_server.completion.engine import Engine, Request
from lsp_server.config import Settings
from tests.standin import ScriptedBackend


@pytest.mark.parametrize(
    ("before", "line_prefix", "block_start", "kind"),
    [
        pytest.param("", "    # compute the ", False, "comment", id="comment-line"),
        pytest.param("", "x = 1  # the ", False, "comment", id="trailing-comment"),
        pytest.param("", "    // the ", False, "comment", id="c-comment"),
        pytest.param('def f():\n    """Return the\n', "    number of ", False, "comment", id="in-a-docstring"),
        pytest.param('def f():\n    """Done."""\n', "    return ", False, "operator", id="after-a-docstring"),
        pytest.param("", "    name = 'abc", False, "string", id="in-a-string"),
        pytest.param("", "    name = 'a#b' + ", False, "operator", id="hash-inside-a-string-is-not-a-comment"),
        pytest.param("", "    total = count * ", False, "operator", id="after-an-operator"),
        pytest.param("", "    call(a, ", False, "operator", id="after-a-comma"),
        pytest.param("", "    if x and ", False, "operator", id="after-a-keyword-operator"),
        pytest.param("", "    total = sum", False, "code", id="in-a-name"),
        pytest.param("", "    x = a // b", False, "code", id="floor-division-is-code"),
        pytest.param("def f():\n", "    ", True, "block-start", id="block-start"),
    ],
)
def test_context_kind(before: str, line_prefix: str, block_start: bool, kind: str) -> None:
    assert context_kind(before, line_prefix, block_start) == kind


def test_bands_and_prior_fit() -> None:
    assert band(-5.0) == 0 and band(-0.05) == len(BANDS) and band(None) == len(BANDS)
    assert all(len(row) == len(BANDS) + 1 for row in PRIOR.values())
    confidence = Confidence()
    assert confidence.estimate("code", -0.05) == pytest.approx(PRIOR["code"][-1])  # nothing learned yet: the prior


def test_what_the_user_keeps_moves_the_estimate_from_the_prior() -> None:
    kept = Confidence([Outcome("comment", -0.05, True)] * 80)
    dropped = Confidence([Outcome("comment", -0.05, False)] * 80)
    prior = PRIOR["comment"][-1]
    assert kept.estimate("comment", -0.05) > prior > dropped.estimate("comment", -0.05)
    assert dropped.estimate("code", -0.05) == pytest.approx(PRIOR["code"][-1])  # another kind learned nothing
    assert dropped.estimate("comment", -0.05) == pytest.approx(20 * prior / 100)


def test_a_kind_never_kept_is_not_worth_generating() -> None:
    never = Confidence([Outcome("string", edge - 0.01, False) for edge in (*BANDS, 0.01) for _ in range(400)])
    assert not never.worth_generating("string", AUTO)
    assert never.worth_generating("string", 0.0)
    assert never.worth_generating("code", AUTO)


TEXT = "def f(values, offset):\n    x = 1\n    "


def scripted(reply: str, logprob: float, **settings: object) -> tuple[Engine, ScriptedBackend]:
    backend = ScriptedBackend(reply, logprob=logprob)
    return Engine(backend, Settings(debounce_ms=0, **settings)), backend  # type: ignore[arg-type]


async def test_a_sure_suggestion_is_shown_from_its_second_token() -> None:
    eng, _ = scripted("total = sum(values) + offset", -0.02)
    shown: list[str] = []
    suggestion = await eng.complete(Request("u", TEXT, len(TEXT), invoked=True), shown.append)
    assert suggestion is not None and suggestion.text == "total = sum(values) + offset"
    assert shown[0] == "total ="  # one token says little: shown once a second agrees
    assert (suggestion.kind, suggestion.mean_logprob) == ("code", pytest.approx(-0.02))
    assert eng.counters.lowConfidence == 0


async def test_an_unlikely_suggestion_is_stopped_and_never_shown() -> None:
    reply = " ".join(f"w{i} +" for i in range(30))  # 60 tokens, each unlikely
    eng, backend = scripted(reply, -1.5)
    shown: list[str] = []
    suggestion = await eng.complete(Request("u", TEXT, len(TEXT), invoked=True), shown.append)
    assert (suggestion, shown) == (None, [])
    assert backend.sent == 12  # stopped once 12 tokens said so: the rest never decoded
    assert (eng.counters.lowConfidence, eng.counters.lowConfidenceStopped) == (1, 1)


async def test_min_confidence_zero_shows_every_suggestion() -> None:
    eng, _ = scripted("total = sum(values) + offset", -1.5, min_confidence=0.0)
    shown: list[str] = []
    suggestion = await eng.complete(Request("u", TEXT, len(TEXT), invoked=True), shown.append)
    assert suggestion is not None and shown[0] == "total"
    assert eng.counters.lowConfidence == 0


async def test_a_short_unlikely_line_is_judged_when_it_ends() -> None:
    eng, _ = scripted("w0 w1 w2", -1.5, multiline="never")
    shown: list[str] = []
    assert await eng.complete(Request("u", "x = ", 4, invoked=True), shown.append) is None
    assert shown == [] and (eng.counters.lowConfidence, eng.counters.lowConfidenceStopped) == (1, 0)


async def test_the_outcomes_of_the_serving_model_are_learned_once() -> None:
    asked: list[str] = []

    def outcomes(model: str) -> list[Outcome]:
        asked.append(model)
        return [Outcome("operator", edge - 0.01, False) for edge in (*BANDS, 0.01) for _ in range(400)]

    backend = ScriptedBackend("1", logprob=-0.01)
    eng = Engine(backend, Settings(debounce_ms=0), outcomes=outcomes)  # type: ignore[arg-type]
    for _ in range(2):
        assert await eng.complete(Request("u", "x = ", 4, invoked=True)) is None
    assert asked == ["scripted"] and backend.prompts == []  # never worth generating after an operator
    assert eng.counters.lowConfidence == 2
