"""The completion engine without pygls: real llama.cpp behind it is not needed for these rules."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from lsp_server.completion.engine import AdaptiveDebounce, AheadBudget, Engine, Request, Selected, Timing
from lsp_server.config import Settings
from tests.conftest import until
from tests.standin import ScriptedBackend


def engine(reply: str, **settings: object) -> tuple[Engine, ScriptedBackend]:
    backend = ScriptedBackend(reply)
    return Engine(backend, Settings(debounce_ms=0, **settings)), backend  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("gaps", "expected"),
    [
        pytest.param([], 0.12, id="first-request"),
        pytest.param([2.0], 0.12, id="a-pause-is-not-a-typing-gap"),
        pytest.param([0.1, 0.1, 0.1], 0.2, id="steady-typing-waits-past-the-usual-gap"),
        pytest.param([0.05, 0.15, 0.08, 0.12, 0.1], 0.3, id="irregular-typing-waits-past-the-slow-gaps"),
        pytest.param([0.1, 0.1, 0.1, 3.0], 0.2, id="after-a-pause-the-rhythm-is-remembered"),
        pytest.param([0.02, 0.02, 0.02], 0.04, id="very-fast-typing-has-a-floor"),
        pytest.param([0.8, 0.8, 0.8], 0.6, id="slow-typing-has-a-ceiling"),
    ],
)
def test_adaptive_debounce(gaps: list[float], expected: float) -> None:
    debounce = AdaptiveDebounce()
    now = 100.0
    delay = debounce.delay(now)
    for gap in gaps:
        now += gap
        delay = debounce.delay(now)
    assert delay == pytest.approx(expected, abs=0.01)


async def test_identical_request_joins_the_running_generation() -> None:
    eng, backend = engine("return total")
    req = Request("file:///a.py", "def f():\n    ", 13, invoked=True)
    first, second = await asyncio.gather(eng.complete(req), eng.complete(req))
    assert first is not None and first == second
    assert len(backend.prompts) == 1
    assert eng.counters.joinedRequests == 1


async def test_newer_request_supersedes_and_stops_the_older() -> None:
    eng, backend = engine(" ".join(f"w{i}" for i in range(1000)))  # streams for 10 s unless stopped
    old = asyncio.ensure_future(eng.complete(Request("u", "x = ", 4, invoked=True)))
    await until(lambda: backend.sent > 0)  # the older generation is certainly running
    new = await eng.complete(Request("u", "x = 1", 5, invoked=True))
    assert await old is None
    assert new is not None
    assert eng.counters.cancelledGenerations == 1


async def test_typed_ahead_is_served_without_the_model() -> None:
    eng, backend = engine("return value")
    text = "def f(value):\n    "
    shown = await eng.complete(Request("u", text, len(text), invoked=True))
    assert shown is not None and shown.text == "return value"
    rest = await eng.complete(Request("u", text + "ret", len(text) + 3))
    assert rest is not None and rest.text == "urn value" and rest.from_cache
    assert len(backend.prompts) == 1
    # The hit's time is counted apart from the time of the suggestion the model wrote.
    status = eng.status()
    assert (status["latencyMs"]["count"], status["cacheHitLatencyMs"]["count"]) == (1, 1)
    mismatch = await eng.complete(Request("u", text + "x", len(text) + 1))
    assert mismatch is None or not mismatch.from_cache


async def test_selected_completion_item_is_extended_over_its_range() -> None:
    eng, backend = engine("(path)")
    text = "import os\nos.path.jo"
    selected = Selected(start=len(text) - 2, end=len(text), text="join")
    suggestion = await eng.complete(Request("u", text, len(text), selected=selected, invoked=True))
    assert suggestion is not None
    assert suggestion.text.startswith("join")
    assert (suggestion.start, suggestion.end) == (len(text) - 2, len(text))
    assert backend.prompts[0].endswith("os.path.join")


async def test_cursor_before_code_is_not_completed() -> None:
    eng, backend = engine("anything")
    text = "print(name)"
    assert await eng.complete(Request("u", text, 6, invoked=True)) is None  # before `name)`
    assert eng.counters.skippedRequests == 1
    assert backend.prompts == []


async def test_out_of_tokens_mid_line_shows_only_whole_lines() -> None:
    eng, _ = engine("total = 0\n    for item in", max_tokens=3, multiline="always")
    text = "def f(items):\n    "
    suggestion = await eng.complete(Request("u", text, len(text), invoked=True))
    assert suggestion is not None and suggestion.text == "total = 0"


PREFETCH_AT = "def total(xs):\n    result = 0\n"


async def test_a_request_arriving_while_the_prefetch_runs_joins_it() -> None:
    eng, backend = engine("    for x in xs: result += x")
    req = Request("u", PREFETCH_AT, len(PREFETCH_AT))
    prefetch = asyncio.ensure_future(eng.prefetch(req))
    await until(lambda: backend.sent > 0)
    suggestion = await eng.complete(req)  # automatic, as the editor asks after the accept
    await prefetch
    assert suggestion is not None and suggestion.text.startswith("    for x in xs")
    assert len(backend.prompts) == 1
    assert (eng.counters.prefetched, eng.counters.prefetchUsed, eng.counters.joinedRequests) == (1, 1, 1)


async def test_a_request_after_the_prefetch_is_served_from_it_once() -> None:
    eng, backend = engine("    return sum(xs)")
    req = Request("u", PREFETCH_AT, len(PREFETCH_AT))
    await eng.prefetch(req)
    assert eng.status()["latencyMs"] == {"count": 0}  # no one waited for it
    first = await eng.complete(req)
    again = await eng.complete(req)
    assert first is not None and first.from_cache and again is not None and again.from_cache
    assert len(backend.prompts) == 1
    assert (eng.counters.prefetched, eng.counters.prefetchUsed, eng.counters.cacheHits) == (1, 1, 2)


async def test_no_prefetch_when_the_same_request_already_runs() -> None:
    eng, backend = engine("    return sum(xs)")
    req = Request("u", PREFETCH_AT, len(PREFETCH_AT))
    running = asyncio.ensure_future(eng.complete(req))
    await until(lambda: backend.sent > 0)
    await eng.prefetch(req)
    assert await running is not None
    assert (eng.counters.prefetched, len(backend.prompts)) == (0, 1)


async def test_first_line_streams_word_by_word_each_update_extending_the_last() -> None:
    eng, _ = engine("total = sum(values) + offset")
    text = "def f(values, offset):\n    x = 1\n    "
    shown: list[str] = []
    suggestion = await eng.complete(Request("u", text, len(text), invoked=True), shown.append)
    assert suggestion is not None and suggestion.text == "total = sum(values) + offset"
    assert shown[:3] == ["total", "total =", "total = sum(values)"]  # whole words only, before the line ends
    for earlier, later in itertools.pairwise(shown):
        assert later.startswith(earlier) and later != earlier
    assert suggestion.text.startswith(shown[-1])


async def test_a_line_that_may_copy_the_next_one_is_not_shown_before_it_ends() -> None:
    eng, _ = engine("return sorted(values)")  # the line below, which post-processing drops once it is finished
    text = "def f(values):\n    "
    shown: list[str] = []
    suggestion = await eng.complete(
        Request("u", text + "\n    return sorted(values)\n", len(text), invoked=True), shown.append
    )
    assert (suggestion, shown) == (None, [])


def test_what_was_shown_is_never_taken_back() -> None:
    from lsp_server.completion.engine import _Growing

    notified: list[str] = []
    growing = _Growing(notified.append)
    for text in ("total", "total =", "tot", "other", "total = 1"):
        growing.show(text)
    assert notified == ["total", "total =", "total = 1"]
    assert growing.settle("total = 1 + x") == "total = 1 + x"
    assert growing.settle("") == "total = 1"  # a final answer dropped by post-processing keeps what was shown


def test_decoding_ahead_backs_off_when_its_tokens_go_unused() -> None:
    budget = AheadBudget()
    assert budget.hold(0.2, "a") == 0
    for _ in range(20):  # the user keeps typing something else: nothing decoded ahead is served
        budget.decoded(12)
    assert budget.hold(0.2, "a") == 0.2  # the line waits for a pause
    for _ in range(5):  # what is decoded after a pause is used: the usage climbs back
        budget.decoded(12)
        budget.used(12)
    assert budget.hold(0.2, "a") == 0.2
    budget.decoded(12)
    budget.used(12)
    assert budget.hold(0.2, "a") == 0


async def test_backed_off_the_line_is_decoded_ahead_only_once_the_usual_gap_passes_without_a_key() -> None:
    backend = ScriptedBackend("return total")
    eng = Engine(backend, Settings(debounce_ms=1500, decode_ahead="auto"))  # type: ignore[arg-type]  # gap 750 ms
    for _ in range(20):
        eng._ahead.decoded(12)  # nothing decoded ahead was served
    first = asyncio.ensure_future(eng.complete(Request("u", "x = t", 5)))
    await asyncio.sleep(0.05)  # the next key, well within the gap
    second = await eng.complete(Request("u", "x = to", 6))
    assert await first is None and second is not None
    assert backend.prefills == [1, 1, 96]  # each prompt at once; the line only for the key followed by a pause


async def test_backed_off_a_key_this_user_pauses_at_has_its_line_decoded_at_once() -> None:
    backend = ScriptedBackend("total")
    eng = Engine(backend, Settings(debounce_ms=300, decode_ahead="auto"))  # type: ignore[arg-type]
    for _ in range(20):
        eng._ahead.decoded(12)  # nothing decoded ahead was served
    assert await eng.complete(Request("u", "return self.", 12)) is not None
    assert backend.prefills == [96]  # after a dot, the line at once, not the prompt then the line after the gap


async def test_a_pause_is_learned_from_the_next_key_in_whichever_document_it_comes() -> None:
    backend = ScriptedBackend("total")
    eng = Engine(backend, Settings(debounce_ms=50, decode_ahead="auto"))  # type: ignore[arg-type]
    for _ in range(20):
        eng._ahead.decoded(12)  # nothing decoded ahead was served
    assert await eng.complete(Request("a.py", "x = ab", 6)) is not None  # within a word: the line waited
    assert backend.prefills == [1, 96]
    assert await eng.complete(Request("b.py", "y = cd", 6)) is not None  # the next key, after a pause
    assert backend.prefills == [1, 96, 96]  # this user pauses within words: the line at once


async def test_a_line_decoded_ahead_that_is_not_worth_showing_is_answered_without_waiting_or_generating() -> None:
    backend = ScriptedBackend("total", logprob=-4.0, ahead=True)  # a line the model is unsure of
    eng = Engine(backend, Settings(debounce_ms=60_000, decode_ahead="auto"))  # type: ignore[arg-type]
    answer = await asyncio.wait_for(eng.complete(Request("u", "x = ", 4)), 30)  # not after the minute's wait
    assert answer is None and backend.prompts == []
    assert (eng.counters.generations, eng.counters.lowConfidence) == (0, 1)


async def test_a_line_decoded_ahead_that_is_worth_showing_is_still_served_by_the_generation() -> None:
    backend = ScriptedBackend("total", logprob=-0.01, ahead=True)
    eng = Engine(backend, Settings(debounce_ms=50, decode_ahead="auto"))  # type: ignore[arg-type]
    shown: list[str] = []
    answer = await eng.complete(Request("u", "x = ", 4), shown.append)
    assert shown == ["total"] and answer is not None and answer.text == "total"
    assert eng.counters.generations == 1  # recorded in the ledger as every suggestion shown


def test_the_keys_a_user_pauses_at_are_learned_from_their_typing() -> None:
    budget = AheadBudget()
    for _ in range(20):
        budget.decoded(12)  # backed off: the line waits for the gap unless a pause is likely
    assert (budget.hold(0.2, "."), budget.hold(0.2, "a")) == (0, 0.2)  # the prior: a dot, not a word
    for _ in range(8):  # this user types on after dots, and pauses within words
        budget.typed(".", paused=False)
        budget.typed("a", paused=True)
        budget.typed("a", paused=False)
    assert (budget.hold(0.2, "."), budget.hold(0.2, "a")) == (0.2, 0)


def test_a_key_is_known_by_what_it_leaves_before_the_cursor() -> None:
    from lsp_server.completion.engine import key_kind

    texts = ("self.", "x = ", "foo(a, ", "name", "if x:\n", "if x:\n    ", "", "s = «", "π")
    assert [key_kind(text) for text in texts] == [".", "= ", ", ", "a", ":\n", ":\n ", "", "?", "a"]


async def test_the_typing_rhythm_is_the_users_not_the_documents() -> None:
    eng = Engine(ScriptedBackend("total"), Settings(debounce_ms=None, decode_ahead="off"))  # type: ignore[arg-type]
    keys = []
    for n in range(3):  # a slow typist in one file: one key every 0.3 s
        keys.append(asyncio.ensure_future(eng.complete(Request("a.py", "x = " + "t" * n, 4 + n))))
        await asyncio.sleep(0.3)
    timing = Timing()
    await eng.complete(Request("b.py", "y = ", 4), timing=timing)  # their next key, in another file
    await asyncio.gather(*keys)
    assert timing.debounce >= AdaptiveDebounce.MAX_S * 1000 * 0.9  # waits past their gaps, not a first key's 0.12 s
