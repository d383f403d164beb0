"""The application: builds and owns what serves requests, and rebuilds only what a change of settings touches."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any, Literal

from lsp_server.acceptance import Acceptance
from lsp_server.assist import AssistRequest, AssistResult, run_assist
from lsp_server.backends import Backend
from lsp_server.backends.factory import ROLES, Role, backend_key, make_backend
from lsp_server.budget import Budget
from lsp_server.completion.confidence import Outcome
from lsp_server.completion.engine import Engine, Request, Suggestion, Timing
from lsp_server.config import Settings, data_dir
from lsp_server.documents import characters
from lsp_server.ledger import Ledger, default_path
from lsp_server.prices import Prices
from lsp_server.privacy import AuditLog
from lsp_server.router import Router

log = logging.getLogger(__name__)

AUDIT_FILE = "cloud-audit.jsonl"
"""The audit log of cloud requests, in tandem's data directory."""
_STOP_COMMANDS_S = 5.0
_JUDGED_KEPT = 500

Level = Literal["error", "warning", "info"]
Report = Callable[[str, Level], None]
"""Shows a message to the user (once per distinct message) and logs it."""
BackendFactory = Callable[[Role, Settings], Backend | None]
Part = Literal["completion", "chat", "cloud", "prices", "budget"]
"""What a change of settings may rebuild: a backend (by role), the prices, the budget."""


def plan(old: Settings, new: Settings) -> frozenset[Part]:
    """The parts a change from `old` to `new` rebuilds. Everything else is kept; the router, which only reads
    settings, is rebuilt every time, and the engine takes the new settings."""
    parts: set[Part] = {role for role in ROLES if backend_key(role, old) != backend_key(role, new)}
    if (old.prices, old.energy_usd_per_hour) != (new.prices, new.energy_usd_per_hour):
        parts |= {"prices", "budget"}
    if (old.daily_budget_usd, old.monthly_budget_usd) != (new.daily_budget_usd, new.monthly_budget_usd):
        parts.add("budget")
    return frozenset(parts)


class App:
    """One server process's settings, ledger, prices, budget, audit log, backends, router and engine.

    Made inside the event loop; counters that describe the process (model loads, the engine's) live as long
    as the app, across changes of settings.
    """

    def __init__(
        self, settings: Settings, root: str, report: Report, make_backend: BackendFactory = make_backend
    ) -> None:
        self.settings = settings
        self.root = root
        """The workspace folder; "" when there is none."""
        self.model_loads = 0
        """Models loaded into this process since it started."""
        self.last_timing = Timing()
        """Stage times of the last suggestion shown; the LSP layer sets it once the answer is written."""
        self._report = report
        self._make_backend = make_backend
        self._starting: set[asyncio.Task[None]] = set()
        self._commands: dict[asyncio.Task[Any], threading.Event] = {}
        """Running explain / debug / refactor commands and their cancel events."""
        self._reconfiguring = asyncio.Lock()
        loop = asyncio.get_running_loop()
        folder = data_dir()

        def ledger_problem(message: str) -> None:
            # the ledger reports from its writer thread; the user is told from the event loop
            loop.call_soon_threadsafe(report, message, "warning")

        self.prices = _prices(settings)
        self.ledger = Ledger(default_path(folder), self.prices, on_problem=ledger_problem)
        self.audit = AuditLog(folder / AUDIT_FILE, on_problem=lambda message: report(message, "warning"))
        self.budget = Budget(self.ledger, self.prices, settings.daily_budget_usd, settings.monthly_budget_usd)
        self.backends: dict[Role, Backend | None] = {role: self._build(role) for role in ROLES}
        """The backend of each role; chat None: the completion backend runs commands on this machine too."""
        self.engine = Engine(self._completion(), settings, self.ledger.record, self._outcomes)
        self.router = self._router()
        self.acceptance = Acceptance(self.ledger.record_outcome)
        """What became of the suggestions shown (in the ledger)."""
        self._judged: dict[str, tuple[str, float | None]] = {}
        """Context kind and mean log-probability of the suggestions shown and not yet accepted, by request id."""
        self._retention: asyncio.TimerHandle | None = None
        self._prefetches: set[asyncio.Task[None]] = set()

    async def complete(
        self, request: Request, path: str, on_partial: Callable[[str], None], timing: Timing
    ) -> Suggestion | None:
        """Ghost text for `request` on the file at `path`, or None; BackendError when the model cannot serve."""
        if not self.settings.enabled:
            return None
        if (denied := self.router.endpoint_denied(path)) is not None:
            self._report(f"{denied} No completions in this file.", "info")
            return None
        return await self.engine.complete(self._shareable(request), on_partial, timing)

    def prefetch(self, request: Request, path: str) -> None:
        """Start the suggestion for `request` now (it follows one accepted whole), unless completions are off."""
        if not self.settings.enabled or self.router.endpoint_denied(path) is not None:
            return
        task = asyncio.ensure_future(self.engine.prefetch(self._shareable(request)))
        self._prefetches.add(task)
        task.add_done_callback(self._prefetched)

    def _shareable(self, request: Request) -> Request:
        """`request` without the other files' text that must not reach the model's machine: the definitions and
        recent edits of files the privacy rules keep home, when the model is a team endpoint elsewhere."""
        uris = {uri for uri, _ in request.others} | {chunk.uri for _, chunk in request.recent}
        home = {uri for uri in uris if self.router.endpoint_denied(uri) is not None}  # each file judged once
        others = tuple((uri, text) for uri, text in request.others if uri not in home)
        recent = tuple((path, chunk) for path, chunk in request.recent if chunk.uri not in home)
        return replace(request, others=others, recent=recent)

    async def assist(
        self,
        request: AssistRequest,
        on_chunk: Callable[[str], None],
        cancel: threading.Event,
        on_notice: Callable[[str], None] | None = None,
    ) -> AssistResult:
        """Run one explain / debug / refactor command; `cancel` (or closing the app) stops it; `on_notice` hears
        why it runs elsewhere than configured, before the reply."""
        task = asyncio.current_task()
        assert task is not None
        self._commands[task] = cancel
        try:
            return await run_assist(request, self.router, on_chunk, cancel, on_notice)
        finally:
            del self._commands[task]

    def shown(self, suggestion: Suggestion, uri: str, language: str) -> None:
        """The editor shows `suggestion` in `uri`: track what becomes of it, and learn from it."""
        kind, logprob = suggestion.kind, suggestion.mean_logprob
        columns = {"language": language, "context": kind, "mean_logprob": logprob}
        if self.acceptance.shown(suggestion.request_id, uri, suggestion.start, suggestion.text, columns):
            self.engine.confidence.shown(kind, logprob)
            self._judged[suggestion.request_id] = (kind, logprob)
            while len(self._judged) > _JUDGED_KEPT:
                del self._judged[next(iter(self._judged))]

    def forget(self, uri: str) -> None:
        """A document was closed: drop what the engine keeps for it, and count what stays of its accepted text."""
        self.engine.forget(uri)
        self.acceptance.closed(uri)
        self._schedule_retention()

    def accepted(
        self, request_id: str, text_of: Callable[[str], str | None], length: int | None = None, encoding: str = "utf-16"
    ) -> tuple[str, int] | None:
        """The user accepted the suggestion of `request_id`: all of it, or its first `length` code units of
        `encoding`; `text_of` gives an open document's text. The document and offset where the next
        suggestion goes when it was accepted whole, else None."""
        uri, text = self.acceptance.suggestion(request_id) or ("", "")
        if length is not None:
            length = characters(text, length, encoding)
        cursor = self.acceptance.accepted(request_id, (text_of(uri) or "") if uri else "", length)
        if (judged := self._judged.pop(request_id, None)) is not None:
            self.engine.confidence.accepted(*judged)
        if not uri and length is None:  # shown before this process started: the accept still counts
            self.ledger.record_outcome(request_id, {"accepted": 1})
        self._schedule_retention()
        return None if cursor is None else (uri, cursor)

    async def usage(self) -> dict[str, Any]:
        """The ledger's totals, as `tandem usage --json` prints them."""

        def report() -> dict[str, Any]:
            self.ledger.flush()
            return self.ledger.report()

        return await asyncio.to_thread(report)  # waits on the ledger's writer, never on the event loop

    def status(self) -> dict[str, Any]:
        """What `tandem.status` answers: counters, latencies, models, settings and backends."""
        result: dict[str, Any] = self.engine.status()
        result["lastTiming"] = asdict(self.last_timing)
        result["model"] = self._completion().status()
        result["chatModel"] = self._chat().status()
        result["modelLoads"] = self.model_loads
        result["settings"] = {
            "debounceMs": "auto" if self.settings.debounce_ms is None else self.settings.debounce_ms,
            "multiline": self.settings.multiline,
        }
        cloud = self.backends["cloud"]
        result["backends"] = {
            "local": result["model"],
            "cloud": {
                "configured": cloud is not None,
                "healthy": cloud is not None and cloud.healthy,
                "lastError": None if cloud is None else cloud.last_error,
                "model": self.settings.cloud_model,
            },
        }
        return result

    async def reconfigure(self, settings: Settings) -> frozenset[Part]:
        """Apply new settings, rebuilding only the parts they change (see `plan`); the parts rebuilt."""
        async with self._reconfiguring:
            parts = plan(self.settings, settings)
            roles = [role for role in ROLES if role in parts]
            if roles:
                await self._stop_commands()  # they record what they spent before their backend goes
            self.settings = settings
            if "prices" in parts:
                self.prices = _prices(settings)
                self.ledger.use_prices(self.prices)
            if "budget" in parts:
                self.budget = Budget(self.ledger, self.prices, settings.daily_budget_usd, settings.monthly_budget_usd)
            retired = [self.backends[role] for role in roles]
            self.backends.update({role: self._build(role) for role in roles})
            self.engine.reconfigure(settings, self._completion() if "completion" in roles else None)
            self.router = self._router()
            for backend in retired:
                if backend is not None:
                    await backend.aclose()
            log.info("settings changed; rebuilt: %s", ", ".join(sorted(parts)) or "nothing")
            return parts

    async def aclose(self) -> None:
        """Stop running commands and completions (they record what they spent), the backends and the ledger."""
        await self._stop_commands()
        await self.engine.aclose()
        self.acceptance.close()
        if self._retention is not None:
            self._retention.cancel()
        for task in self._starting:
            task.cancel()
        for backend in self.backends.values():
            if backend is not None:
                await backend.aclose()
        self.ledger.close()

    def _build(self, role: Role) -> Backend | None:
        """The backend of `role` under the current settings, its start (a model load, counted) under way."""
        backend = self._make_backend(role, self.settings)
        if backend is not None:
            self.model_loads += backend.loads_model
            task = asyncio.ensure_future(backend.start())
            self._starting.add(task)
            task.add_done_callback(self._started)
        return backend

    def _schedule_retention(self) -> None:
        """Check retention when the next check is due."""
        if self._retention is not None:
            self._retention.cancel()
        due = self.acceptance.due()
        loop = asyncio.get_running_loop()
        self._retention = None if due is None else loop.call_later(max(0.0, due - time.monotonic()), self._retain)

    def _retain(self) -> None:
        self.acceptance.check()
        self._schedule_retention()

    def _prefetched(self, task: asyncio.Task[None]) -> None:
        self._prefetches.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("prefetch failed: %s", error)  # the next request asks the model again, and reports

    def _started(self, task: asyncio.Task[None]) -> None:
        self._starting.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._report(str(error), "error")

    def _outcomes(self, model: str) -> list[Outcome]:
        """What became of `model`'s suggestions shown, newest first (run off the event loop)."""
        return [Outcome(kind, logprob, taken) for kind, logprob, taken in self.ledger.outcomes(model)]

    def _completion(self) -> Backend:
        backend = self.backends["completion"]
        assert backend is not None, "the factory always builds a completion backend"
        return backend

    def _chat(self) -> Backend:
        """What runs commands on this machine: the chat model, else the completion backend."""
        return self.backends["chat"] or self._completion()

    def _router(self) -> Router:
        return Router(
            self.settings,
            self._chat(),
            self.backends["cloud"],
            self.budget.check,
            self.root or None,
            ledger=self.ledger,
            audit=self.audit,
        )

    async def _stop_commands(self) -> None:
        for cancel in self._commands.values():
            cancel.set()
        if self._commands:
            await asyncio.wait(list(self._commands), timeout=_STOP_COMMANDS_S)


def _prices(settings: Settings) -> Prices:
    overrides = {model: {"input": i, "output": o} for model, i, o in settings.prices}
    return Prices.load(overrides, energy_usd_per_hour=settings.energy_usd_per_hour)
