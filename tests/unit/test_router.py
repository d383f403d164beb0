"""Routing decisions: settings, privacy, cloud presence and health, budget."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lsp_server.backends.openai_compat import OpenAICompatBackend
from lsp_server.budget import Budget, BudgetDecision
from lsp_server.config import Settings
from lsp_server.ledger import Entry, Ledger
from lsp_server.prices import Prices
from lsp_server.router import RETRY_UNHEALTHY_S, Route, Router

ALLOWED = BudgetDecision(True)
WARN = BudgetDecision(True, warn="Cloud spend today reaches $0.90 of the $1.00 budget.")
OVER = BudgetDecision(False, message="Cloud budget reached: $1.00 of $1.00 spent today.")


def cloud(state: str) -> OpenAICompatBackend | None:
    """A cloud backend (never called here) in the given health state."""
    if state == "none":
        return None
    backend = OpenAICompatBackend(model="gpt-4o", base_url="http://127.0.0.1:9/v1", api_key="sk-test")
    if state != "healthy":
        ago = 1.0 if state == "failed-now" else RETRY_UNHEALTHY_S + 1
        backend.healthy, backend.failed_at = False, time.monotonic() - ago
        backend.last_error = "http://127.0.0.1:9/v1/ rejected the API key (401)"
    return backend


def local() -> OpenAICompatBackend:
    return OpenAICompatBackend(model="fleet", base_url="http://127.0.0.1:9/v1", api_key=None, name="endpoint")


@pytest.mark.parametrize(
    ("task", "settings", "cloud_state", "budget", "file", "expected", "reason"),
    [
        pytest.param(
            "completion",
            {},
            "healthy",
            ALLOWED,
            "a.py",
            Route("local"),
            None,
            id="completion-auto-stays-local",
        ),
        pytest.param(
            "explain",
            {},
            "healthy",
            ALLOWED,
            "a.py",
            Route("cloud"),
            None,
            id="auto-with-key-goes-to-cloud",
        ),
        pytest.param(
            "explain",
            {},
            "none",
            ALLOWED,
            "a.py",
            Route("local", outcome="ok"),
            "No cloud API key",
            id="auto-without-key-runs-locally",
        ),
        pytest.param(
            "debug",
            {"routes": (("debug", "cloud"),)},
            "none",
            ALLOWED,
            "a.py",
            Route("local", outcome="fallback"),
            "OPENAI_API_KEY",
            id="cloud-without-key-falls-back",
        ),
        pytest.param(
            "refactor",
            {"routes": (("refactor", "local"),)},
            "healthy",
            ALLOWED,
            "a.py",
            Route("local"),
            None,
            id="configured-local",
        ),
        pytest.param(
            "explain",
            {},
            "healthy",
            ALLOWED,
            ".env.production",
            Route("local", outcome="fallback"),
            "'.env*'",
            id="denied-file-stays-local",
        ),
        pytest.param(
            "explain",
            {},
            "healthy",
            ALLOWED,
            "vendor/lib.py",
            Route("local", outcome="fallback"),
            ".tandemignore",
            id="tandemignore-stays-local",
        ),
        pytest.param(
            "explain",
            {"cloud_deny": ("*.py",)},
            "healthy",
            ALLOWED,
            "a.py",
            Route("local", outcome="fallback"),
            "'*.py'",
            id="custom-deny-glob",
        ),
        pytest.param(
            "explain",
            {},
            "failed-now",
            ALLOWED,
            "a.py",
            Route("local", outcome="fallback"),
            "rejected the API key",
            id="unhealthy-cloud-falls-back",
        ),
        pytest.param(
            "explain",
            {},
            "failed-long-ago",
            ALLOWED,
            "a.py",
            Route("cloud"),
            None,
            id="unhealthy-cloud-retried-later",
        ),
        pytest.param(
            "explain",
            {},
            "healthy",
            OVER,
            "a.py",
            Route("local", outcome="fallback"),
            "Cloud budget reached",
            id="over-budget-falls-back",
        ),
        pytest.param(
            "explain",
            {"over_budget": "refuse"},
            "healthy",
            OVER,
            "a.py",
            Route("none", outcome="over_budget"),
            "Cloud budget reached",
            id="over-budget-refused",
        ),
        pytest.param(
            "explain",
            {},
            "healthy",
            WARN,
            "a.py",
            Route("cloud", warning=WARN.warn),
            None,
            id="budget-warning-passed-on",
        ),
    ],
)
def test_decide(
    tmp_path: Path,
    task: str,
    settings: dict[str, Any],
    cloud_state: str,
    budget: BudgetDecision,
    file: str,
    expected: Route,
    reason: str | None,
) -> None:
    (tmp_path / ".tandemignore").write_text("vendor/\n")
    router = Router(
        dataclasses.replace(Settings(), **settings),
        local(),
        cloud(cloud_state),
        lambda *_: budget,
        str(tmp_path),
    )
    route = router.decide(task, str(tmp_path / file), 100, 800)
    assert (route.backend, route.outcome, route.warning) == (
        expected.backend,
        expected.outcome,
        expected.warning,
    )
    if reason is None:
        assert route.reason is None
    else:
        assert route.reason is not None and reason in route.reason


@pytest.mark.parametrize(
    ("cloud_state", "file", "reason"),
    [
        pytest.param("none", "a.py", "No local model is loaded to run explain", id="no-backend-at-all"),
        pytest.param("healthy", "id_rsa", "'id_rsa*'", id="denied-file-never-goes-to-cloud"),
    ],
)
def test_nothing_can_serve_without_a_local_model(tmp_path: Path, cloud_state: str, file: str, reason: str) -> None:
    router = Router(Settings(), None, cloud(cloud_state), None, str(tmp_path))
    route = router.decide("explain", str(tmp_path / file), 100, 800)
    assert route.backend == "none" and route.outcome == "error"
    assert route.reason is not None and reason in route.reason


def test_budget_check_gets_the_model_and_token_estimate(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []

    def check(model: str, prompt_tokens: int, max_tokens: int) -> BudgetDecision:
        calls.append((model, prompt_tokens, max_tokens))
        return ALLOWED

    Router(Settings(), local(), cloud("healthy"), check, str(tmp_path)).decide(
        "debug", str(tmp_path / "a.py"), 1234, 900
    )
    assert calls == [("gpt-4o", 1234, 900)]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "ledger.sqlite3", Prices.load())
    yield ledger
    ledger.close()


def test_real_budget_over_the_daily_limit(tmp_path: Path, ledger: Ledger) -> None:
    ledger.record(Entry("explain", "cloud", "gpt-4o", 400_000, 100_000))  # about $2 at list price
    ledger.flush()
    budget = Budget(ledger, Prices.load(), daily_usd=1.0, monthly_usd=None)
    settings = dataclasses.replace(Settings(), daily_budget_usd=1.0)
    route = Router(settings, local(), cloud("healthy"), budget.check, str(tmp_path)).decide(
        "explain", str(tmp_path / "a.py"), 1000, 800
    )
    assert route.backend == "local" and route.outcome == "fallback"
    assert route.reason is not None and "today" in route.reason and "runs on the local model" in route.reason


@pytest.mark.parametrize(
    ("endpoint", "task", "file", "expected"),
    [
        pytest.param("http://gpu-pool.internal:8000", "completion", "secrets.py", "denied", id="remote-denied-file"),
        pytest.param("http://u:pw@gpu-pool.internal:8000", "explain", ".env", "denied", id="remote-denied-explain"),
        pytest.param("http://gpu-pool.internal:8000", "completion", "app.py", "local", id="remote-ordinary-file"),
        pytest.param("http://127.0.0.1:8000", "completion", "secrets.py", "local", id="loopback-denied-file"),
        pytest.param(None, "explain", ".env", "local", id="in-process-model"),
    ],
)
def test_denied_files_stay_off_an_endpoint_on_another_machine(
    tmp_path: Path, endpoint: str | None, task: str, file: str, expected: str
) -> None:
    settings = dataclasses.replace(Settings(), local_endpoint=endpoint)
    router = Router(settings, local(), None, None, str(tmp_path))
    path = str(tmp_path / file)
    route = router.decide(task, path, 100, 800)
    if expected == "denied":
        assert (route.backend, route.outcome) == ("none", "denied")
        reason = router.endpoint_denied(path)
        assert reason is not None and route.reason is not None and reason in route.reason
        assert "at gpu-pool.internal:" in reason and "privacy.cloudDeny" in reason and "pw" not in reason
    else:
        assert route.backend == "local" and router.endpoint_denied(path) is None
