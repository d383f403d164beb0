"""The application without pygls: which parts a change of settings rebuilds, and what survives it."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lsp_server.app import App, plan
from lsp_server.assist import AssistRequest
from lsp_server.backends import Backend
from lsp_server.backends.factory import Role, make_backend
from lsp_server.completion.confidence import PRIOR_WEIGHT
from lsp_server.completion.engine import Request, Timing
from lsp_server.config import Settings
from tests.standin import ScriptedBackend

MODEL = "/models/coder.gguf"
CHAT = "/models/chat.gguf"
WITH_CHAT = {"model_path": MODEL, "chat_model_path": CHAT}
REPLY = "return sum(values) / len(values) if values else 0.0"


@pytest.mark.parametrize(
    ("old", "new", "rebuilt"),
    [
        pytest.param({}, {"daily_budget_usd": 5.0}, {"budget"}, id="daily-budget"),
        pytest.param({"monthly_budget_usd": 9.0}, {}, {"budget"}, id="monthly-budget-removed"),
        pytest.param({}, {"prices": (("m", 1.0, 2.0),)}, {"prices", "budget"}, id="prices"),
        pytest.param({}, {"energy_usd_per_hour": 0.1}, {"prices", "budget"}, id="energy-price"),
        pytest.param({}, {"over_budget": "refuse"}, set(), id="over-budget-is-the-routers"),
        pytest.param({}, {"routes": (("explain", "local"),)}, set(), id="routes"),
        pytest.param({}, {"cloud_deny": ("*.txt",)}, set(), id="privacy"),
        pytest.param({}, {"debounce_ms": 10}, set(), id="debounce"),
        pytest.param({}, {"multiline": "never"}, set(), id="multiline"),
        pytest.param({}, {"max_tokens": 8, "prompt_tokens": 512, "enabled": False}, set(), id="completion-settings"),
        pytest.param({}, {"model_path": MODEL}, {"completion"}, id="model-path"),
        pytest.param({}, {"context_size": 1024}, {"completion"}, id="context-size"),
        pytest.param({}, {"n_gpu_layers": 0}, {"completion"}, id="gpu-layers"),
        pytest.param({}, {"threads": 2}, {"completion"}, id="threads"),
        pytest.param({}, {"flash_attention": False}, {"completion"}, id="flash-attention"),
        pytest.param({}, {"local_endpoint": "http://fleet:8000"}, {"completion"}, id="endpoint-set"),
        pytest.param(
            {"local_endpoint": "http://fleet:8000"}, {"local_endpoint": "http://fleet:8000", "model_path": MODEL},
            set(), id="model-path-unused-beside-an-endpoint",
        ),
        pytest.param({"model_path": MODEL}, WITH_CHAT, {"chat"}, id="chat-model-set"),
        pytest.param({"model_path": MODEL}, {**WITH_CHAT, "chat_model_path": MODEL}, set(), id="chat-is-the-same-file"),
        pytest.param(
            WITH_CHAT, {**WITH_CHAT, "model_path": "/models/other.gguf"},
            {"completion"}, id="chat-model-kept-when-the-completion-model-changes",
        ),
        pytest.param(
            WITH_CHAT, {**WITH_CHAT, "context_size": 1024},
            {"completion", "chat"}, id="context-size-reloads-both-models",
        ),
        pytest.param({}, {"cloud_model": "gpt-4o-mini"}, {"cloud"}, id="cloud-model"),
        pytest.param({}, {"cloud_base_url": "http://proxy/v1"}, {"cloud"}, id="cloud-url"),
    ],
)  # fmt: skip
def test_plan(old: dict[str, Any], new: dict[str, Any], rebuilt: set[str]) -> None:
    assert plan(Settings(**old), Settings(**new)) == rebuilt


def test_the_factory_builds_one_backend_per_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert make_backend("cloud", Settings()) is None  # no key, no cloud
    assert make_backend("chat", Settings(model_path=MODEL)) is None  # the completion model chats too
    assert make_backend("chat", Settings(model_path=MODEL, chat_model_path=MODEL)) is None
    chat = make_backend("chat", Settings(model_path=MODEL, chat_model_path=CHAT))
    assert chat is not None and chat.loads_model
    endpoint = make_backend("completion", Settings(local_endpoint="http://fleet:8000", chat_model_path=CHAT))
    assert endpoint is not None and endpoint.name == "endpoint" and not endpoint.loads_model
    assert make_backend("chat", Settings(local_endpoint="http://fleet:8000", chat_model_path=CHAT)) is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cloud = make_backend("cloud", Settings(cloud_model="gpt-4o-mini"))
    assert cloud is not None and (cloud.name, cloud.model) == ("cloud", "gpt-4o-mini")


class Built:
    """A backend factory of scripted backends, each named after the settings it was built from."""

    def __init__(self) -> None:
        self.backends: list[ScriptedBackend] = []

    def __call__(self, role: Role, settings: Settings) -> Backend | None:
        if role == "cloud" or (role == "chat" and settings.chat_model_path is None):
            return None
        backend = ScriptedBackend(REPLY, model=f"{role}-{settings.context_size}")
        self.backends.append(backend)
        return backend


@pytest.fixture
def built() -> Built:
    return Built()


@pytest.fixture
async def app(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    """An app on scripted backends, its ledger in `tmp_path`; nothing may be reported to the user."""
    monkeypatch.setenv("TANDEM_DATA_DIR", str(tmp_path))
    reported: list[str] = []
    app = App(Settings(debounce_ms=0), "", lambda message, level: reported.append(message), make_backend=built)
    yield app
    await app.aclose()
    assert reported == []


async def complete(app: App, uri: str = "file:///a.py") -> str | None:
    text = "def f(values):\n    "
    suggestion = await app.complete(Request(uri, text, len(text), invoked=True), "/a.py", lambda _: None, Timing())
    return None if suggestion is None else suggestion.text


async def test_a_budget_change_keeps_the_model_ledger_and_counters(app: App, built: Built) -> None:
    backend, ledger, budget = app.backends["completion"], app.ledger, app.budget
    assert await complete(app)
    assert await app.reconfigure(dataclasses.replace(app.settings, daily_budget_usd=0.000001)) == {"budget"}
    assert app.backends["completion"] is backend and not backend.closed and app.ledger is ledger
    assert budget.check("gpt-4o", 1000, 800).allowed and not app.budget.check("gpt-4o", 1000, 800).allowed
    assert app.router.budget_check == app.budget.check  # the router asks the new budget
    assert await complete(app, "file:///b.py")
    status = app.status()
    assert (status["modelLoads"], status["counters"]["generations"]) == (1, 2)
    assert [b.model for b in built.backends] == ["completion-4096"]


async def test_a_context_size_change_reloads_the_model_once_and_counters_carry_on(app: App, built: Built) -> None:
    first = app.backends["completion"]
    assert await complete(app)
    assert await app.reconfigure(dataclasses.replace(app.settings, context_size=1024)) == {"completion"}
    assert first.closed and app.status()["model"] == {"state": "ready", "name": "completion-1024"}
    assert await complete(app, "file:///b.py")
    assert first.prompts and len(built.backends[1].prompts) == 1  # the next completion ran on the new model
    status = app.status()
    assert (status["modelLoads"], status["counters"]["generations"]) == (2, 2)


async def test_a_command_running_on_a_replaced_model_stops_and_is_recorded_first(app: App) -> None:
    streaming = asyncio.Event()
    text = "def f(values):\n    return sum(values)\n"
    request = AssistRequest("explain", "/a.py", "python", text, 0, len(text))
    command = asyncio.ensure_future(app.assist(request, lambda _: streaming.set(), threading.Event()))
    await streaming.wait()
    await app.reconfigure(dataclasses.replace(app.settings, context_size=1024))
    assert command.done()  # the change waited for it
    result = command.result()
    assert (result.backend, result.outcome) == ("local", "cancelled") and result.text
    answer = result.text.removeprefix("This code")  # the words an explanation on the local model begins with
    assert answer != REPLY and REPLY.startswith(answer.strip())
    app.ledger.flush()
    assert [(r["task"], r["model"], r["outcome"]) for r in app.ledger.rows()] == [
        ("explain", "completion-4096", "cancelled")
    ]


async def test_suggestions_shown_and_accepted_teach_the_confidence_at_once(app: App) -> None:
    text = "def f(values):\n    "
    request = Request("file:///a.py", text, len(text), invoked=True)
    shown = []
    for _ in range(2):
        suggestion = await app.complete(request, "/a.py", lambda _: None, Timing())
        assert suggestion is not None
        app.shown(suggestion, "file:///a.py", "python")
        app.shown(suggestion, "file:///a.py", "python")  # shown again (typed ahead): learned once
        shown.append(suggestion)
        request = Request("file:///a.py", text + " ", len(text) + 1, invoked=True)
    kind, logprob = shown[0].kind, shown[0].mean_logprob
    prior = app.engine.confidence.estimate(kind, logprob)
    app.accepted(shown[1].request_id, lambda uri: text)
    app.accepted(shown[1].request_id, lambda uri: text)  # the same accept reported twice counts once
    seen = PRIOR_WEIGHT + 2  # the prior's weight and the two suggestions shown
    assert app.engine.confidence.estimate(kind, logprob) == pytest.approx((prior * seen + 1) / seen)
