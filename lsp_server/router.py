"""Which backend serves a task: settings, privacy rules, budget and backend health decide."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from lsp_server.backends import Backend
from lsp_server.budget import BudgetDecision
from lsp_server.config import Settings
from lsp_server.ledger import Ledger
from lsp_server.privacy import AuditLog, cloud_denied, leaves_machine

RETRY_UNHEALTHY_S = 30.0
"""How long a failed cloud is passed over before it is tried again."""


@dataclass(frozen=True)
class Route:
    """Where a request goes, and what the user is told about it."""

    backend: Literal["cloud", "local", "none"]
    """none: nothing may serve it; `reason` says why."""
    reason: str | None = None
    """Why the route differs from the configured one (fallback, privacy, budget), for the user."""
    outcome: Literal["ok", "fallback", "over_budget", "denied", "error"] = "ok"
    """What the ledger records for a request on this route."""
    warning: str | None = None
    """A budget warning to show once."""


class Router:
    """Routes tasks between the local model and the cloud, with a reason for every detour."""

    def __init__(
        self,
        settings: Settings,
        local: Backend | None,
        cloud: Backend | None,
        budget_check: Callable[[str, int, int], BudgetDecision] | None,
        root: str | None,
        *,
        ledger: Ledger | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.settings = settings
        self.local = local
        """What runs commands on this machine (or a team's endpoint)."""
        self.cloud = cloud
        """None when no API key is set."""
        self.budget_check = budget_check
        self.root = root
        self.ledger = ledger
        self.audit = audit

    def decide(self, task: str, path: str, prompt_tokens: int, max_tokens: int) -> Route:
        """The route of one request for `task` on the file at `path`; completions always run locally."""
        configured = self.settings.route(task)
        if task == "completion" or configured == "local":
            return self._local(task, path, None, "ok")
        denied = cloud_denied(path, self.root, self.settings.cloud_deny)
        if denied is not None:
            return self._local(task, path, f"Not sent to the cloud: {denied}.", "fallback")
        if self.cloud is None:
            return self._local(
                task,
                path,
                "No cloud API key is set (OPENAI_API_KEY).",
                "fallback" if configured == "cloud" else "ok",
            )
        cloud = self.cloud
        if not cloud.healthy and time.monotonic() - (cloud.failed_at or 0.0) < RETRY_UNHEALTHY_S:
            return self._local(task, path, f"The cloud failed just now: {cloud.last_error}.", "fallback")
        if self.budget_check is None:
            return Route("cloud")
        budget = self.budget_check(cloud.model, prompt_tokens, max_tokens)
        if budget.allowed:
            return Route("cloud", warning=budget.warn)
        if self.settings.over_budget == "refuse":
            return Route("none", budget.message or "Cloud budget reached.", "over_budget")
        return self._local(task, path, budget.message or "Cloud budget reached.", "fallback")

    def endpoint_denied(self, path: str) -> str | None:
        """Why the file at `path` must not go to a `local.endpoint` on another machine, or None when it may."""
        endpoint = self.settings.local_endpoint
        if endpoint is None or not leaves_machine(endpoint):
            return None
        # Text sent to a team's server leaves this machine as surely as text sent to the cloud.
        denied = cloud_denied(path, self.root, self.settings.cloud_deny)
        host = urlsplit(endpoint).hostname  # not the whole URL: it may carry a password
        return None if denied is None else f"Not sent to the team endpoint at {host}: {denied}."

    def _local(self, task: str, path: str, why: str | None, outcome: Literal["ok", "fallback"]) -> Route:
        if (held := self.endpoint_denied(path)) is not None:
            return Route("none", f"{why or ''} {held}".lstrip(), "denied")
        if self.local is None:
            return Route("none", f"{why or ''} No local model is loaded to run {task}.".lstrip(), "error")
        if why is None:
            return Route("local")
        return Route("local", f"{why} {task.capitalize()} runs on the local model.", outcome)
