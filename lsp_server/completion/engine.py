"""The completion pipeline: debounce, decide, build prompt, stream with early stop, post-process, record."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import statistics
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import PurePath

from lsp_server.backends import Ahead, Backend, Generation, TextPrompt
from lsp_server.completion.confidence import AUTO, SURE, Confidence, Outcome, context_kind
from lsp_server.completion.postprocess import (
    ends_in_loop,
    is_block_start,
    may_repeat_nearby,
    postprocess,
    repeats_nearby,
)
from lsp_server.completion.prompt import build_prompt
from lsp_server.config import Settings
from lsp_server.ledger import Entry
from lsp_server.recent import Chunk

log = logging.getLogger(__name__)

# Complete only when what follows the cursor on its line is closers, punctuation or nothing:
# in the middle of code a suggestion would have to rewrite what is already there.
_COMPLETABLE_SUFFIX = re.compile(r"[\s)\]}>'\"`;:,.]*")
_MAX_LINES = 12
# What a suggestion's first tokens say of it: one likely to be kept (`SURE`) is shown from its second token;
# another once `_JUDGED_AFTER` tokens leave it likely enough (the threshold), and stopped, its decoding saved,
# once `_STOP_AFTER` tokens leave it unlikely, with nothing shown (tuned on `tandem eval` seed 1).
_SURE_AFTER = 2
_JUDGED_AFTER = 8
_STOP_AFTER = 12
_DOCSTRING_WINDOW = 20_000
"""Characters before the cursor's line searched for an open docstring."""
# The first line is shown while it is written, a whole word at a time: a word the model is still writing may
# grow (`get_fo` → `get_format`), and its half would be noise to read; what ends in a non-word character is
# final, as greedy tokens are never taken back.
_WORD_TAIL = re.compile(r"\w+$")
_WORD_END = re.compile(r"\W")
_LAST_KEY = re.compile(r"(\S)(\s*)$")


@dataclass(frozen=True)
class Selected:
    """The editor's selected completion-list item that ghost text must extend."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Request:
    """One inline-completion request, snapshotted by the server."""

    uri: str
    text: str
    cursor: int
    selected: Selected | None = None
    invoked: bool = False
    """Explicitly asked for by the user: no debounce."""
    workspace: str = ""
    others: tuple[tuple[str, str], ...] = ()
    """Other open documents of the same language as (uri, text): definitions from them join the prompt."""
    recent: tuple[tuple[str, Chunk], ...] = ()
    """Chunks of recent edits as (path, chunk), oldest first: they open the prompt."""
    path: str = ""
    """The document's path in the workspace, as the prompt names it beside the recent chunks."""


@dataclass(frozen=True)
class Suggestion:
    """Ghost text to insert, replacing `text[start:end]` of the request's document."""

    text: str
    start: int
    end: int
    request_id: str
    from_cache: bool = False
    kind: str = "code"
    """Where it was made (`confidence.context_kind`)."""
    mean_logprob: float | None = None


@dataclass
class Counters:
    """What the engine did, for `tandem.status`."""

    inlineRequests: int = 0
    generations: int = 0
    cancelledGenerations: int = 0
    cacheHits: int = 0
    supersededRequests: int = 0
    skippedRequests: int = 0
    joinedRequests: int = 0
    errors: int = 0
    promptTokensEvaluated: int = 0
    """Prompt tokens the model evaluated (not served from its KV cache)."""
    generatedTokens: int = 0
    """Tokens the model generated, shown or not, decoded ahead or not."""
    aheadTokens: int = 0
    """Tokens decoded ahead while the user typed (the model was idle), used or not."""
    aheadTokensUsed: int = 0
    """Tokens of generations that had been decoded ahead."""
    draftedTokens: int = 0
    """Tokens drafted by prompt lookup and checked by the model, kept or not (ahead or for a generation)."""
    draftedTokensKept: int = 0
    """Of the drafted tokens, those the model chose too (counted among the generated tokens)."""
    prefetched: int = 0
    """Suggestions started at once after a suggestion was accepted whole, for the request that follows."""
    prefetchUsed: int = 0
    """Of those, the ones a request was then served from."""
    lowConfidence: int = 0
    """Suggestions not shown as unlikely to be kept (`completion.minConfidence`)."""
    lowConfidenceStopped: int = 0
    """Of those, generations stopped before their end, their decoding saved."""


class AdaptiveDebounce:
    """How long to wait before a request may start the model, from the user's typing rhythm.

    While typing, the wait stretches to twice the user's usual gap between keys (their 90th
    percentile), so a generation starts only once the typing stops; a slow typist waits longer,
    a fast one less. The first key after a pause waits as long: it is usually followed by more,
    and a generation started for it costs the one that matters its CPU (measured in the benchmark).
    One per user, whichever document they type in: learned per document, the first keys in each new
    file waited the 0.12 s of a first key and started a generation at a slow typist's every gap.
    """

    PAUSE_S = 1.0
    """A longer gap between requests ends a burst of typing."""
    STRETCH = 2.0
    """The wait, as a multiple of the user's usual gap between keys."""
    START_S = 0.12
    MIN_S = 0.04
    MAX_S = 0.6
    """A generation started on a gap in the typing is stopped by the next key: past the usual gap with room to
    spare, so that a pause starts about one; the wait costs nothing, as the first line's words, decoded ahead
    meanwhile, are shown as they come."""

    def __init__(self) -> None:
        self._last: float | None = None
        self._gaps: deque[float] = deque(maxlen=16)

    def delay(self, now: float) -> float:
        """Seconds to wait for a request that arrives at `now`."""
        gap = None if self._last is None else now - self._last
        self._last = now
        if gap is not None and gap < self.PAUSE_S:
            self._gaps.append(gap)
        wait = self.STRETCH * self._usual_gap() if self._gaps else self.START_S
        return min(self.MAX_S, max(self.MIN_S, wait))

    def _usual_gap(self) -> float:
        gaps = sorted(self._gaps)
        return gaps[min(len(gaps) - 1, int(0.9 * len(gaps)))]


@dataclass
class _Shown:
    """The last suggestion of a document, kept for typed-ahead hits."""

    prefix: str
    suffix: str
    text: str
    request_id: str
    prefetched: bool = False
    """Made by a prefetch and not yet served."""


class AheadBudget:
    """When to decode the first line ahead of a request while its debounce runs (`completion.decodeAhead: auto`).

    The prompt is evaluated at once (its last token's logits give the first token for free; the KV cache keeps
    the prompt, which the generation always uses). The first line is decoded at once too while what is decoded
    ahead gets used: a pause's generation serves those tokens instead of decoding them. When the user keeps
    typing something else they are wasted CPU, so once fewer than one in `USED` of the recent tokens decoded
    ahead were served, the line waits until the typist's usual gap between keys has passed without a key (most
    keys of a burst come sooner; a pause does not). What is then decoded ahead is mostly used, so the usage
    climbs back and says by itself when decoding at once would pay again.

    Except after a key this user often pauses at: where one key in `PAUSES` or more of those leaving the same
    thing before the cursor (`key_kind`) ended a burst of typing, the line is decoded at once all the same (a
    pause there gets its ghost text as soon as the model can write it; a key within a burst costs the CPU until
    the next one). Learned from this user's typing; until then, people pause after an opening bracket, a dot,
    a comma, an operator and a line end more than within a word (the prior, one pause in two keys).
    """

    USED = 4
    WINDOW = 256
    """Tokens decoded ahead that the usage is judged on (older ones count less and less)."""
    PAUSES = 4
    KEYS = 64
    """Keys of one kind that its pause rate is judged on (older ones count less and less)."""
    PRONE = frozenset("([{.,=:")

    def __init__(self) -> None:
        self._decoded = 0.0
        self._used = 0.0
        self._pauses: dict[str, tuple[float, float]] = {}
        """Per kind of key: the pauses that followed one, and the keys."""

    def hold(self, gap: float, kind: str) -> float:
        """Seconds from the next request until its first line is decoded ahead, given the typist's usual gap and
        the kind of the key that made it."""
        useful = self._decoded < self.WINDOW / 4 or self._used * self.USED >= self._decoded
        return 0.0 if useful or self._likely_pause(kind) else gap

    def typed(self, kind: str, paused: bool) -> None:
        """A key of `kind` was followed by a pause, or by another key within its wait."""
        pauses, keys = self._pauses.get(kind, (0.0, 0.0))
        if keys >= self.KEYS:
            pauses, keys = pauses / 2, keys / 2
        self._pauses[kind] = (pauses + paused, keys + 1)

    def _likely_pause(self, kind: str) -> bool:
        pauses, keys = self._pauses.get(kind, (0.0, 0.0))
        prior = 1.0 if kind[:1] in self.PRONE or "\n" in kind else 0.0
        return (pauses + prior) * self.PAUSES >= keys + 2

    def decoded(self, tokens: int) -> None:
        """Tokens were decoded ahead."""
        self._decoded += tokens
        if self._decoded > self.WINDOW:
            scale = self.WINDOW / self._decoded
            self._decoded, self._used = self.WINDOW, self._used * scale

    def used(self, tokens: int) -> None:
        """A generation served tokens decoded ahead."""
        self._used = min(self._decoded, self._used + tokens)


@dataclass
class _Growing:
    """The ghost text one generation has shown so far: an update only ever extends it."""

    notify: Callable[[str], None]
    text: str = ""

    def show(self, text: str) -> None:
        if len(text) > len(self.text) and text.startswith(self.text):
            self.text = text
            self.notify(text)

    def settle(self, answer: str) -> str:
        """The answer, unless it would take back some of what was shown: then what was shown."""
        return answer if answer.startswith(self.text) else self.text


@dataclass
class _Judge:
    """Whether one suggestion is likely enough to be kept to be shown (`completion.minConfidence`)."""

    confidence: Confidence
    kind: str
    threshold: float
    mean_logprob: float | None = None
    """Of the whole suggestion, once generated."""

    def sure(self, logprobs: list[float], pieces: int = 1) -> bool:
        """Whether what is written so far may be shown: enough tokens, likely enough; judged on the kind of
        context alone when the backend reports no log-probabilities (`pieces` of text came without any)."""
        if self.threshold <= 0:
            return True
        if not logprobs:
            return pieces > 0 and self.likely(None)
        chance = self.confidence.estimate(self.kind, _mean(logprobs))
        tokens = len(logprobs)
        return (tokens >= _SURE_AFTER and chance >= SURE) or (tokens >= _JUDGED_AFTER and chance >= self.threshold)

    def hopeless(self, logprobs: list[float]) -> bool:
        """Unlikely to be kept, with enough tokens to say so: not worth decoding on."""
        return self.threshold > 0 and len(logprobs) >= _STOP_AFTER and not self.likely(_mean(logprobs))

    def likely(self, mean_logprob: float | None) -> bool:
        return self.confidence.estimate(self.kind, mean_logprob) >= self.threshold


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class _Running:
    """The request a document's generation serves, and where its answer will be."""

    request: Request
    answer: asyncio.Future[Suggestion | None]
    prefetched: bool = False
    """A prefetch no request has joined yet."""


@dataclass
class _Slot:
    """Per-document state: the newest request wins."""

    seq: int = 0
    cancel: threading.Event | None = None
    running: _Running | None = None
    shown: _Shown | None = None

    def supersede(self) -> int:
        self.seq += 1
        if self.cancel is not None:
            self.cancel.set()
        return self.seq


@dataclass
class Timing:
    """Where one request's time went, in milliseconds: waiting on purpose, in the model, and the rest."""

    total: float = 0.0
    debounce: float = 0.0
    model: float = 0.0
    """Time the model worker spent on this request's generation (queueing for it is not model time)."""
    server: float = 0.0
    """From reading the request to writing its answer, in the server (the LSP layer fills it in)."""


@dataclass(frozen=True)
class Context:
    """What post-processing needs to know about the cursor's surroundings."""

    line_prefix: str
    line_suffix: str
    following: str
    multiline: bool
    preceding: str = ""
    """The lines before the cursor's line (up to 2,000 characters)."""

    @classmethod
    def at(cls, text: str, cursor: int, multiline: str) -> Context:
        """The context at `cursor`; `multiline` is the setting ("auto", "always", "never")."""
        line_start = text.rfind("\n", 0, cursor) + 1
        line_end = text.find("\n", cursor)
        line_end = len(text) if line_end < 0 else line_end
        previous_start = text.rfind("\n", 0, max(0, line_start - 1)) + 1
        line_prefix = text[line_start:cursor]
        line_suffix = text[cursor:line_end].rstrip("\r")
        block = is_block_start(line_prefix, text[previous_start : max(0, line_start - 1)], line_suffix)
        return cls(
            line_prefix=line_prefix,
            line_suffix=line_suffix,
            following=text[line_end + 1 : line_end + 2001],
            multiline=multiline == "always" or (multiline == "auto" and block),
            preceding=text[max(0, line_start - 2001) : max(0, line_start - 1)],
        )


class Engine:
    """Turns inline-completion requests into suggestions, one model generation at a time."""

    def __init__(
        self,
        backend: Backend,
        settings: Settings,
        record: Callable[[Entry], None] = lambda e: None,
        outcomes: Callable[[str], list[Outcome]] = lambda model: [],
    ) -> None:
        """`record` writes a ledger row; `outcomes` reads what became of a model's suggestions shown."""
        self.counters = Counters()
        self._backend = backend
        self._settings = settings
        self._record = record
        self._slots: dict[str, _Slot] = {}
        self._latencies: deque[float] = deque(maxlen=2000)
        """Request to answer, in ms, of suggestions the model wrote for the request."""
        self._hit_latencies: deque[float] = deque(maxlen=2000)
        """The same for suggestions served from what was shown before (typed ahead)."""
        self._ahead = AheadBudget()
        self._key: tuple[str, float] | None = None
        """The kind of the user's last key (in any document) and when it came, for `AheadBudget`."""
        self._rhythm = AdaptiveDebounce()
        """The user's typing rhythm, in whichever document they type: a new file is typed at the same pace."""
        self._wait = AdaptiveDebounce.START_S
        """The debounce the last debounced request got."""
        self.confidence = Confidence()
        """How likely suggestions are to be kept, learned from the ledger's outcomes of the model serving."""
        self._outcomes = outcomes
        self._confidence_of = ""
        """The model whose outcomes `confidence` learned from."""

    def reconfigure(self, settings: Settings, backend: Backend | None = None) -> None:
        """Serve the next requests with `settings`, and with `backend` when given: running generations then stop
        and the suggestions kept for typed-ahead hits go (another model wrote them). Counters carry on."""
        self._settings = settings
        if backend is not None:
            self._backend = backend
            for slot in self._slots.values():
                slot.supersede()
                slot.shown = None

    async def complete(
        self, req: Request, on_partial: Callable[[str], None] = lambda text: None, timing: Timing | None = None
    ) -> Suggestion | None:
        """The newest request of a document gets a suggestion; older ones get None. `timing` gets its stage times."""
        self.counters.inlineRequests += 1
        slot = self._slots.setdefault(req.uri, _Slot())
        running = self._running(slot, req)
        if running is not None:
            # The same request again (an editor re-asking while ghost text streams): share the answer.
            self.counters.joinedRequests += 1
            if running.prefetched:
                running.prefetched = False
                self.counters.prefetchUsed += 1
            return await asyncio.shield(running.answer)
        self._keyed(req)
        return await self._run(req, slot, on_partial, timing or Timing())

    async def prefetch(self, req: Request) -> None:
        """Start the suggestion for `req` now, without a debounce (a suggestion was just accepted whole, so the
        model is idle and the editor will ask at the end of the accepted text); the request joins it or is
        served from it. Nothing is started when that request already runs."""
        slot = self._slots.setdefault(req.uri, _Slot())
        if self._running(slot, req) is None:
            self.counters.prefetched += 1
            await self._run(replace(req, invoked=True), slot, lambda text: None, Timing(), prefetch=True)

    def _running(self, slot: _Slot, req: Request) -> _Running | None:
        """The generation of `slot` still running for the same request (however it was triggered)."""
        running = slot.running
        if running is None or running.answer.done() or replace(req, invoked=running.request.invoked) != running.request:
            return None
        return running

    async def _run(
        self, req: Request, slot: _Slot, on_partial: Callable[[str], None], timing: Timing, prefetch: bool = False
    ) -> Suggestion | None:
        """Serve `req` as the newest request of its document."""
        started = time.perf_counter()
        ticket = slot.supersede()
        answer: asyncio.Future[Suggestion | None] = asyncio.get_running_loop().create_future()
        slot.running = _Running(req, answer, prefetch)
        suggestion = None
        try:
            suggestion = await self._complete(req, slot, ticket, on_partial, started, timing, prefetch)
            return suggestion
        finally:
            answer.set_result(suggestion)
            timing.total = (time.perf_counter() - started) * 1000

    async def _complete(
        self,
        req: Request,
        slot: _Slot,
        ticket: int,
        on_partial: Callable[[str], None],
        started: float,
        timing: Timing,
        prefetch: bool = False,
    ) -> Suggestion | None:
        if req.selected is not None:
            req = _apply_selected(req)
        if (hit := _typed_ahead(slot.shown, req)) is not None:
            self.counters.cacheHits += 1
            if slot.shown is not None and slot.shown.prefetched:
                slot.shown.prefetched = False
                self.counters.prefetchUsed += 1
            return self._answer(hit, req, started)
        if not _COMPLETABLE_SUFFIX.fullmatch(_line_suffix(req.text, req.cursor)):
            self.counters.skippedRequests += 1
            return None
        multiline = self._settings.multiline
        if prefetch and multiline == "auto":  # after an accepted line the cursor ends it: what follows is below
            multiline = "always"
        ctx = Context.at(req.text, req.cursor, multiline)
        backend = self._backend
        prompt = build_prompt(
            req.text,
            req.cursor,
            await backend.template(),
            self._settings.prompt_tokens,
            others=req.others,
            recent=req.recent,
            path=req.path,
            repo_name=PurePath(req.workspace).name,
        )
        text_prompt = TextPrompt(
            prompt.text, self._settings.max_tokens, () if ctx.multiline else ("\n",), infill=prompt.infill
        )
        judge = await self._judge(backend, ctx, req.text, req.cursor)
        if not self.confidence.worth_generating(judge.kind, judge.threshold):
            self.counters.lowConfidence += 1
            return None
        delay = 0.0 if req.invoked else self._debounce()
        shown = _Growing(on_partial)
        waited = time.perf_counter()
        settled = None
        if delay > 0 and self._settings.decode_ahead == "auto":
            settled = await self._decode_ahead(backend, text_prompt, ctx, slot, ticket, shown, judge, delay)
        if settled is not None:
            await asyncio.wait([settled], timeout=max(0.0, delay - (time.perf_counter() - waited)))
            if settled.done() and settled.result() and ticket == slot.seq:
                # The line is written and none of it is worth showing: a generation would write the very same.
                self.counters.lowConfidence += settled.result() == "unlikely"
                return None
        await asyncio.sleep(max(0.0, delay - (time.perf_counter() - waited)))
        timing.debounce = (time.perf_counter() - waited) * 1000
        if ticket != slot.seq:
            self.counters.supersededRequests += 1
            return None
        request_id = uuid.uuid4().hex
        text = await self._generate(
            backend, text_prompt, ctx, slot, ticket, req.workspace, request_id, shown, timing, judge
        )
        if not text:
            return None
        slot.shown = _Shown(req.text[: req.cursor], req.text[req.cursor :], text, request_id, prefetch)
        suggestion = Suggestion(text, req.cursor, req.cursor, request_id, False, judge.kind, judge.mean_logprob)
        if prefetch:  # no one waits for it: its latency is not one a user saw
            return suggestion
        return self._answer(suggestion, req, started)

    async def _decode_ahead(
        self,
        backend: Backend,
        prompt: TextPrompt,
        ctx: Context,
        slot: _Slot,
        ticket: int,
        shown: _Growing,
        judge: _Judge,
        delay: float,
    ) -> asyncio.Future[str] | None:
        """The model is idle while the debounce runs: evaluate the prompt and decode the first line ahead (at once,
        or once the typist's usual gap has passed: `AheadBudget`), showing its words as they come (greedy tokens:
        the generation after the pause serves the same ones), so that when typing stops the line is partly or
        wholly there and the wait costs nothing. The future says, once the line is decoded, why nothing of a
        single-line suggestion is to be shown ("unlikely" to be kept, or "empty" once post-processed; "" when
        something is, or when it is a block's first line)."""
        hold = self._ahead.hold(delay / AdaptiveDebounce.STRETCH, self._key[0] if self._key else "")
        if hold > 0:
            backend.prefill(replace(prompt, max_tokens=1), self._count_prefill)  # the prompt only
            await asyncio.sleep(hold)
            if ticket != slot.seq:
                return None
        settled: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        decoded: list[str] = []
        logprobs: list[float] = []

        def decoded_ahead(piece: str) -> None:
            decoded.append(piece)
            raw = "".join(decoded)
            if ticket != slot.seq:
                return
            if "\n" in raw:  # the first line of a block, finished
                if judge.likely(_mean(logprobs)):
                    shown.show(_clean(raw[: raw.rindex("\n")], ctx))
            elif _WORD_END.search(piece) and judge.sure(logprobs):
                shown.show(_first_words(raw, ctx))

        def done_ahead(done: Ahead) -> None:
            self._count_prefill(done)
            finished = done.finished and ticket == slot.seq and not ctx.multiline  # the whole line, at its stop
            likely = judge.likely(_mean(logprobs))
            if finished and likely:
                shown.show(_clean("".join(decoded), ctx))
            settled.set_result("" if not finished or shown.text else "empty" if likely else "unlikely")

        backend.prefill(prompt, done_ahead, decoded_ahead, logprobs)
        return settled

    async def _judge(self, backend: Backend, ctx: Context, text: str, cursor: int) -> _Judge:
        """The judge of a suggestion at `ctx`, on what the ledger says of the serving model's suggestions."""
        if backend.model != self._confidence_of:
            self._confidence_of = backend.model
            outcomes = await asyncio.to_thread(self._outcomes, backend.model)
            self.confidence = Confidence(outcomes)
        setting = self._settings.min_confidence
        line_start = cursor - len(ctx.line_prefix)
        kind = context_kind(text[max(0, line_start - _DOCSTRING_WINDOW) : line_start], ctx.line_prefix, ctx.multiline)
        return _Judge(self.confidence, kind, AUTO if setting == "auto" else setting)

    def forget(self, uri: str) -> None:
        """Drop a closed document's state and stop its generation."""
        slot = self._slots.pop(uri, None)
        if slot is not None:
            slot.supersede()

    async def aclose(self, timeout_s: float = 30.0) -> None:
        """Stop every generation and wait until each has recorded what it spent."""
        answers = [s.running.answer for s in self._slots.values() if s.running and not s.running.answer.done()]
        for slot in self._slots.values():
            slot.supersede()
        if answers:
            await asyncio.wait(answers, timeout=timeout_s)

    def status(self) -> dict[str, object]:
        """Counters and latency percentiles, as `tandem.status` reports them."""
        return {
            "counters": asdict(self.counters),
            "latencyMs": _percentiles(self._latencies),
            "cacheHitLatencyMs": _percentiles(self._hit_latencies),
        }

    def _count_prefill(self, ahead: Ahead) -> None:
        self.counters.promptTokensEvaluated += ahead.evaluated
        self.counters.generatedTokens += ahead.decoded
        self.counters.aheadTokens += ahead.decoded
        self._ahead.decoded(ahead.decoded)
        self._count_drafts(ahead.drafted, ahead.drafts_kept)

    def _count_drafts(self, drafted: int, kept: int) -> None:
        self.counters.draftedTokens += drafted
        self.counters.draftedTokensKept += kept

    def _keyed(self, req: Request) -> None:
        """A key made `req`: the user's previous one, in whichever document, ended a burst if its wait ran out
        before this one came."""
        now = time.monotonic()
        if self._key is not None:
            kind, at = self._key
            self._ahead.typed(kind, now - at >= self._wait)
        self._key = (key_kind(req.text[: req.cursor]), now)

    def _debounce(self) -> float:
        fixed = self._settings.debounce_ms
        self._wait = self._rhythm.delay(time.monotonic()) if fixed is None else fixed / 1000
        return self._wait

    async def _generate(
        self,
        backend: Backend,
        prompt: TextPrompt,
        ctx: Context,
        slot: _Slot,
        ticket: int,
        workspace: str,
        request_id: str,
        shown: _Growing,
        timing: Timing,
        judge: _Judge,
    ) -> str | None:
        """One generation, streamed then finished (never taking back what was `shown`); the cleaned text, or None
        when it was cancelled; "" when `judge` finds it unlikely to be kept and nothing of it was shown."""
        cancel = threading.Event()
        slot.cancel = cancel
        report = Generation()
        text = ""
        outcome = "error"
        try:
            raw, stopped = await self._stream(
                backend, prompt, ctx, cancel, report, lambda: ticket != slot.seq, shown, judge
            )
            text = _clean(raw, ctx)
            judge.mean_logprob = report.mean_logprob
            if text and not shown.text and (stopped or not judge.likely(report.mean_logprob)):
                self.counters.lowConfidence += 1
                self.counters.lowConfidenceStopped += stopped
                text = ""
            text = shown.settle(text)
            outcome = "ok" if text else "empty"
        except asyncio.CancelledError:  # $/cancelRequest
            outcome = "cancelled"
            raise
        finally:
            if ticket != slot.seq:
                outcome = "cancelled"
            timing.model = report.total_s * 1000
            self._finish(backend, report, outcome, workspace, request_id)
        return None if outcome == "cancelled" else text

    async def _stream(
        self,
        backend: Backend,
        prompt: TextPrompt,
        ctx: Context,
        cancel: threading.Event,
        report: Generation,
        superseded: Callable[[], bool],
        shown: _Growing,
        judge: _Judge,
    ) -> tuple[str, bool]:
        """Stream the raw reply, showing its first line word by word and then each finished line once `judge` is
        sure of it, and stopping as soon as what will be shown is complete, or once `judge` finds it hopeless
        with nothing shown (then True)."""
        raw = ""
        pieces = 0
        stream = backend.stream(prompt, cancel, report)
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                raw += chunk
                pieces += 1
                if superseded() or ends_in_loop(raw):
                    break
                if not shown.text and judge.hopeless(report.logprobs):
                    return raw, True
                sure = judge.sure(report.logprobs, pieces)
                if "\n" in chunk:
                    if self._enough(raw, ctx, shown, sure):
                        break
                elif "\n" not in raw and _WORD_END.search(chunk) and sure:
                    shown.show(_first_words(raw, ctx))
        if ctx.multiline and report.usage.completion_tokens >= prompt.max_tokens and "\n" in raw:
            raw = raw[: raw.rindex("\n")]  # out of tokens mid-line: show only whole lines
        return raw, False

    def _finish(self, backend: Backend, report: Generation, outcome: str, workspace: str, request_id: str) -> None:
        """Count and record a generation that reached the model (or failed)."""
        if not report.usage.prompt_tokens and outcome != "error":
            return  # it never reached the model
        self.counters.generations += 1
        if outcome == "cancelled":
            self.counters.cancelledGenerations += 1
        elif outcome == "error":
            self.counters.errors += 1
        self.counters.promptTokensEvaluated += report.usage.prompt_tokens - report.usage.cached_tokens
        self.counters.generatedTokens += report.usage.completion_tokens - report.ahead_tokens
        self.counters.aheadTokensUsed += report.ahead_tokens
        self._ahead.used(report.ahead_tokens)
        self._count_drafts(report.drafted, report.drafts_kept)
        self._record(Entry.of("completion", backend.name, backend.model, report, outcome, workspace, request_id))

    def _enough(self, raw: str, ctx: Context, shown: _Growing, sure: bool) -> bool:
        """Show each finished line at once (when `sure`); True when the block (or the single line) is done."""
        finished = raw[: raw.rindex("\n")]
        lines = _clean(finished, ctx)
        if sure:
            shown.show(lines)
        if not ctx.multiline:
            return True
        return lines.count("\n") < finished.count("\n") or finished.count("\n") >= _MAX_LINES

    def _answer(self, suggestion: Suggestion, req: Request, started: float) -> Suggestion:
        # A typed-ahead hit answers in about no time, without the model: a number apart, not a flattering median.
        (self._hit_latencies if suggestion.from_cache else self._latencies).append(
            (time.perf_counter() - started) * 1000
        )
        if req.selected is None:
            return suggestion
        sel = req.selected  # the ghost text must extend the selected item, over its range
        return Suggestion(sel.text + suggestion.text, sel.start, sel.end, suggestion.request_id, suggestion.from_cache)


def _percentiles(values: Iterable[float]) -> dict[str, float | int]:
    """How many, and their median and 95th percentile in ms (absent when there are none)."""
    ordered = sorted(values)
    percentiles: dict[str, float | int] = {"count": len(ordered)}
    if ordered:
        percentiles["p50"] = round(statistics.median(ordered), 1)
        percentiles["p95"] = round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1)
    return percentiles


def _clean(raw: str, ctx: Context) -> str:
    text = postprocess(
        raw,
        line_prefix=ctx.line_prefix,
        line_suffix=ctx.line_suffix,
        following=ctx.following,
        multiline=ctx.multiline,
    )
    return "" if repeats_nearby(text, ctx.line_prefix, ctx.preceding, ctx.following) else text


def _first_words(raw: str, ctx: Context) -> str:
    """What of an unfinished first line can be shown: its whole words, cleaned; nothing while the line may turn
    out to copy the line above or below (finished, it would be dropped)."""
    words = _WORD_TAIL.sub("", raw)
    if may_repeat_nearby(words, ctx.line_prefix, ctx.preceding, ctx.following):
        return ""
    return _clean(words, ctx)


def key_kind(before: str) -> str:
    """What a key leaves before the cursor, as far as pausing after it goes: its last non-blank character (any
    word character as `a`, other than ASCII punctuation as `?`) and whether a space, a line end, or a line end
    and the next line's indentation follow (the Enter key itself and the keys typing the indentation after it
    are not paused at alike)."""
    last = _LAST_KEY.search(before[-200:])
    if last is None:
        return ""
    char, blank = last.groups()
    kind = "a" if char.isalnum() or char == "_" else char if char.isascii() else "?"
    if "\n" in blank:
        return kind + ("\n" if blank.endswith("\n") else "\n ")
    return kind + (" " if blank else "")


def _line_suffix(text: str, cursor: int) -> str:
    end = text.find("\n", cursor)
    return text[cursor : len(text) if end < 0 else end]


def _apply_selected(req: Request) -> Request:
    """The document as it will be once the selected item is accepted, cursor after it."""
    sel = req.selected
    assert sel is not None
    text = req.text[: sel.start] + sel.text + req.text[sel.end :]
    return replace(req, text=text, cursor=sel.start + len(sel.text))


def _typed_ahead(shown: _Shown | None, req: Request) -> Suggestion | None:
    """The rest of the last suggestion when the user typed exactly its beginning."""
    if shown is None or req.text[req.cursor :] != shown.suffix:
        return None
    prefix = req.text[: req.cursor]
    if not prefix.startswith(shown.prefix):
        return None
    typed = prefix[len(shown.prefix) :]
    if not shown.text.startswith(typed) or len(typed) >= len(shown.text):
        return None
    return Suggestion(shown.text[len(typed) :], req.cursor, req.cursor, shown.request_id, from_cache=True)
