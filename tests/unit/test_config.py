"""Settings as editors send them (VS Code's nested section, Neovim's tables, dotted keys) resolved."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from lsp_server import config
from lsp_server.config import SAVED_SETTINGS, Settings, resolve, saved_settings

REPO = Path(__file__).resolve().parents[2]
NO_ENV: dict[str, str] = {}


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    """`{"local.contextSize": 1}` as an editor nests it: `{"local": {"contextSize": 1}}`."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _vscode_defaults() -> dict[str, Any]:
    """VS Code's `tandem` section when the user set nothing: every contributed setting at its default."""
    manifest = json.loads((REPO / "editors" / "vscode" / "package.json").read_text())
    properties = manifest["contributes"]["configuration"]["properties"]
    return _nested({name.removeprefix("tandem."): spec.get("default") for name, spec in properties.items()})


def test_every_vscode_server_setting_is_a_key_the_server_knows() -> None:
    section = _vscode_defaults()
    client_only = {f"{group}.{key}" for group in ("server", "refactor", "trace") for key in section.pop(group)}
    assert client_only == {"server.command", "refactor.showDiff", "trace.server"}
    flat = config.flatten(section)
    assert set(flat) == set(config._WIRE)
    assert len(flat) == 27


def test_vscode_defaults_resolve_to_the_server_defaults() -> None:
    assert resolve(_vscode_defaults(), NO_ENV) == (Settings(), [])


CHANCE = 'expected "auto" or a chance between 0 and 1'
ALL = {
    "local.modelPath": "~/models/coder.gguf",
    "local.chatModelPath": "/models/chat.gguf",
    "local.nGpuLayers": -1,
    "local.contextSize": 8192,
    "local.flashAttention": False,
    "local.threads": 4,
    "local.endpoint": "http://fleet:8080/v1",
    "local.endpointKind": "llama-server",
    "local.endpointApiKey": "team-key-1",
    "local.endpointUser": "ada",
    "local.energyUsdPerHour": 0.05,
    "completion.enabled": False,
    "completion.debounceMs": 100,
    "completion.multiline": "never",
    "completion.decodeAhead": "off",
    "completion.minConfidence": 0.2,
    "completion.maxTokens": 64,
    "completion.promptTokens": 1024,
    "completion.recentChunks": 0,
    "cloud.model": "gpt-4o-mini",
    "cloud.baseUrl": "https://llm.example.com/v1",
    "cloud.dailyBudgetUsd": 5,
    "cloud.monthlyBudgetUsd": 50.5,
    "cloud.overBudget": "refuse",
    "cloud.prices": {"my-model": {"input": 0.5, "output": 1}},
    "routes": {"explain": "local", "refactor": "cloud"},
    "privacy.cloudDeny": ["*.pem", "vault/**"],
}
ALL_SETTINGS = Settings(
    model_path=os.path.expanduser("~/models/coder.gguf"),
    chat_model_path="/models/chat.gguf",
    n_gpu_layers=-1,
    context_size=8192,
    flash_attention=False,
    threads=4,
    local_endpoint="http://fleet:8080/v1",
    endpoint_kind="llama-server",
    endpoint_api_key="team-key-1",
    endpoint_user="ada",
    energy_usd_per_hour=0.05,
    enabled=False,
    debounce_ms=100,
    multiline="never",
    decode_ahead="off",
    min_confidence=0.2,
    max_tokens=64,
    prompt_tokens=1024,
    recent_chunks=0,
    cloud_model="gpt-4o-mini",
    cloud_base_url="https://llm.example.com/v1",
    daily_budget_usd=5.0,
    monthly_budget_usd=50.5,
    over_budget="refuse",
    prices=(("my-model", 0.5, 1.0),),
    routes=(("explain", "local"), ("debug", "auto"), ("refactor", "cloud")),
    cloud_deny=("*.pem", "vault/**"),
)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(_nested(ALL), id="nested-as-vscode-and-neovim-send-it"),
        pytest.param(ALL, id="dotted-keys"),
        pytest.param(
            {
                **_nested({k: v for k, v in ALL.items() if k.startswith("local.")}),
                **{k: v for k, v in ALL.items() if not k.startswith("local.")},
            },
            id="nested-and-dotted-mixed",
        ),
    ],
)
def test_every_key_resolves(options: dict[str, Any]) -> None:
    assert resolve(options, NO_ENV) == (ALL_SETTINGS, [])


@pytest.mark.parametrize(
    ("options", "changed"),
    [
        pytest.param({"completion": {"debounceMs": 100}}, {"debounce_ms": 100}, id="vscode-one-user-value"),
        pytest.param({"completion.debounceMs": 100}, {"debounce_ms": 100}, id="dotted-key"),
        pytest.param({"local": {"nGpuLayers": "auto"}}, {}, id="gpu-layers-auto"),
        pytest.param({"local": {"nGpuLayers": 0}}, {"n_gpu_layers": 0}, id="gpu-layers-none"),
        pytest.param({"completion": {"debounceMs": "auto"}}, {}, id="debounce-auto"),
        pytest.param({"completion": {"debounceMs": 0}}, {"debounce_ms": 0}, id="debounce-zero"),
        pytest.param({"completion": {"debounceMs": 5000}}, {"debounce_ms": 5000}, id="debounce-most"),
        pytest.param({"local": {"modelPath": ""}, "cloud": {"baseUrl": ""}}, {}, id="empty-strings-are-unset"),
        pytest.param({"cloud": {"prices": {}}, "routes": {}}, {}, id="empty-objects"),
        pytest.param({"privacy": {"cloudDeny": []}}, {"cloud_deny": ()}, id="deny-nothing"),
        pytest.param({"routes": {"completion": "cloud"}}, {}, id="completion-route-of-older-clients-is-ignored"),
        pytest.param(
            {"local": {"modelPth": "x.gguf"}, "editor": {"fontSize": 12}, "server": {"command": ["tandem"]}},
            {},
            id="unknown-keys-are-no-problem",
        ),
        # Neovim: `vim.NIL` arrives as JSON null, an empty Lua table as a JSON list.
        pytest.param(
            _nested({key: None for key in ALL}),
            {},
            id="neovim-nulls-are-unset",
        ),
        pytest.param(
            {"routes": [], "cloud": {"prices": []}, "local": []},
            {},
            id="neovim-empty-tables",
        ),
        pytest.param(
            {"privacy": {"cloudDeny": []}, "local": {"contextSize": 2048, "threads": None}},
            {"cloud_deny": (), "context_size": 2048},
            id="neovim-nested-tables",
        ),
    ],
)
def test_payloads(options: dict[str, Any], changed: dict[str, Any]) -> None:
    assert resolve(options, NO_ENV) == (dataclasses.replace(Settings(), **changed), [])


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        pytest.param("local.modelPath", 42, "expected a file path", id="path-number"),
        pytest.param("local.chatModelPath", ["chat.gguf"], "expected a file path", id="path-list"),
        pytest.param("local.nGpuLayers", -2, 'expected "auto", -1 (all) or a number of layers', id="layers-negative"),
        pytest.param("local.nGpuLayers", "12", 'expected "auto", -1 (all) or a number of layers', id="layers-string"),
        pytest.param("local.contextSize", "4096", "expected a positive integer", id="context-string"),
        pytest.param("local.contextSize", -1, "expected a positive integer", id="context-negative"),
        pytest.param("local.contextSize", 0, "expected a positive integer", id="context-zero"),
        pytest.param("local.contextSize", 4096.5, "expected a positive integer", id="context-fraction"),
        pytest.param("local.contextSize", True, "expected a positive integer", id="context-bool"),
        pytest.param("local.flashAttention", "true", "expected true or false", id="flash-string"),
        pytest.param("local.flashAttention", 1, "expected true or false", id="flash-number"),
        pytest.param("local.threads", 0, "expected a positive integer", id="threads-zero"),
        pytest.param("local.endpoint", ["http://fleet/v1"], "expected a string", id="endpoint-list"),
        pytest.param("local.endpointKind", "vllm", 'expected "auto", "llama-server" or "openai"', id="kind-unknown"),
        pytest.param("local.endpointUser", "ada\n", "expected printable ASCII text", id="user-newline"),
        pytest.param("local.energyUsdPerHour", -0.1, "expected a non-negative amount in USD", id="energy-negative"),
        pytest.param("completion.enabled", "yes", "expected true or false", id="enabled-string"),
        pytest.param(
            "completion.debounceMs", 6000, 'expected "auto" or milliseconds between 0 and 5000', id="debounce-long"
        ),
        pytest.param(
            "completion.debounceMs", -5, 'expected "auto" or milliseconds between 0 and 5000', id="debounce-negative"
        ),
        pytest.param(
            "completion.debounceMs", "100", 'expected "auto" or milliseconds between 0 and 5000', id="debounce-string"
        ),
        pytest.param(
            "completion.multiline", "sometimes", 'expected "auto", "always" or "never"', id="multiline-unknown"
        ),
        pytest.param("completion.multiline", ["auto"], 'expected "auto", "always" or "never"', id="multiline-list"),
        pytest.param("completion.decodeAhead", "on", 'expected "auto" or "off"', id="decode-ahead-unknown"),
        pytest.param("completion.minConfidence", 1.5, CHANCE, id="min-confidence-above-1"),
        pytest.param("completion.minConfidence", "high", CHANCE, id="min-confidence-word"),
        pytest.param("completion.maxTokens", 0, "expected a positive integer", id="max-tokens-zero"),
        pytest.param("completion.promptTokens", "1536", "expected a positive integer", id="prompt-tokens-string"),
        pytest.param("cloud.model", "", "expected a model name", id="model-empty"),
        pytest.param("cloud.model", ["gpt-4o"], "expected a model name", id="model-list"),
        pytest.param("cloud.baseUrl", 8080, "expected a string", id="base-url-number"),
        pytest.param("cloud.dailyBudgetUsd", "5", "expected a non-negative amount in USD", id="daily-string"),
        pytest.param("cloud.dailyBudgetUsd", -1, "expected a non-negative amount in USD", id="daily-negative"),
        pytest.param("cloud.dailyBudgetUsd", True, "expected a non-negative amount in USD", id="daily-bool"),
        pytest.param("cloud.monthlyBudgetUsd", -3, "expected a non-negative amount in USD", id="monthly-negative"),
        pytest.param("cloud.overBudget", "wait", 'expected "local" or "refuse"', id="over-budget-unknown"),
        pytest.param(
            "cloud.prices",
            {"my-model": {"input": -1, "output": 1}},
            "price of 'my-model' needs non-negative input and output",
            id="price-negative",
        ),
        pytest.param(
            "cloud.prices",
            {"my-model": {"input": 1}},
            "price of 'my-model' needs non-negative input and output",
            id="price-half",
        ),
        pytest.param(
            "cloud.prices", ["my-model"], 'expected {"model": {"input": USD, "output": USD}}', id="prices-list"
        ),
        pytest.param(
            "routes",
            {"explain": "gpu"},
            "expected an object mapping explain, debug, refactor to local, cloud or auto",
            id="route-unknown",
        ),
        pytest.param(
            "routes",
            {"review": "cloud"},
            "expected an object mapping explain, debug, refactor to local, cloud or auto",
            id="task-unknown",
        ),
        pytest.param(
            "routes",
            "cloud",
            "expected an object mapping explain, debug, refactor to local, cloud or auto",
            id="routes-string",
        ),
        pytest.param("completion.recentChunks", -1, "expected a whole number from 0 to 64", id="recent-negative"),
        pytest.param("completion.recentChunks", "8", "expected a whole number from 0 to 64", id="recent-string"),
        pytest.param("privacy.cloudDeny", "*.env", "expected a list of glob patterns", id="deny-string"),
        pytest.param("privacy.cloudDeny", ["*.pem", 3], "expected a list of glob patterns", id="deny-number"),
        pytest.param("privacy.cloudDeny", [""], "expected a list of glob patterns", id="deny-empty-glob"),
    ],
)
def test_a_wrong_value_is_reported_and_replaced_by_its_default(key: str, value: Any, why: str) -> None:
    other, field, good = (
        ("local.contextSize", "context_size", 2048) if key == "local.threads" else ("local.threads", "threads", 2)
    )
    settings, problems = resolve(_nested({key: value, other: good}), NO_ENV)
    assert settings == dataclasses.replace(Settings(), **{field: good})  # the other values still apply
    assert problems == [f"tandem setting {key}={value!r} ignored: {why}"]


def test_a_malformed_endpoint_key_is_reported_without_its_value() -> None:
    settings, problems = resolve({"local": {"endpointApiKey": "sk-team\n"}}, NO_ENV)
    assert settings.endpoint_api_key is None
    assert problems == ["tandem setting local.endpointApiKey=(hidden) ignored: expected printable ASCII text"]
    assert "sk-team" not in repr(resolve({"local": {"endpointApiKey": "sk-team"}}, NO_ENV)[0])


def test_the_endpoint_key_comes_from_the_setting_else_the_environment() -> None:
    env = {"TANDEM_ENDPOINT_API_KEY": "from-env"}
    assert resolve({}, env)[0].endpoint_api_key == "from-env"
    assert resolve({"local": {"endpointApiKey": "from-editor"}}, env)[0].endpoint_api_key == "from-editor"
    assert resolve({}, NO_ENV)[0].endpoint_api_key is None


def test_the_endpoint_user_is_the_setting_else_a_random_id_kept(tmp_path: Path) -> None:
    env = {"TANDEM_DATA_DIR": str(tmp_path)}
    assert config.endpoint_user(Settings(endpoint_user="ada"), env) == "ada"
    made = config.endpoint_user(Settings(), env)
    assert len(made) == 16 and made == config.endpoint_user(Settings(), env)  # kept: the same replica next time
    assert made != config.endpoint_user(Settings(), {"TANDEM_DATA_DIR": str(tmp_path / "other")})


def test_each_wrong_value_is_one_problem() -> None:
    settings, problems = resolve({"local": {"contextSize": "big", "threads": -1}, "cloud.model": ""}, NO_ENV)
    assert settings == Settings()
    assert problems == [
        "tandem setting local.contextSize='big' ignored: expected a positive integer",
        "tandem setting local.threads=-1 ignored: expected a positive integer",
        "tandem setting cloud.model='' ignored: expected a model name",
    ]


@pytest.mark.parametrize(
    ("saved", "env", "options", "model_path"),
    [
        pytest.param({}, {}, {}, None, id="embedded-default"),
        pytest.param({"local.modelPath": "/saved.gguf"}, {}, {}, "/saved.gguf", id="saved"),
        pytest.param({"local.modelPath": "/saved.gguf"}, {"TANDEM_MODEL": "/env.gguf"}, {}, "/env.gguf", id="env"),
        pytest.param(
            {"local.modelPath": "/saved.gguf"},
            {"TANDEM_MODEL": "/env.gguf"},
            {"local": {"modelPath": "/editor.gguf"}},
            "/editor.gguf",
            id="editor",
        ),
        pytest.param(
            {"local.modelPath": "/saved.gguf"},
            {"TANDEM_MODEL": "/env.gguf"},
            {"local": {"modelPath": ""}},
            "/env.gguf",
            id="empty-editor-path-keeps-env",
        ),
        pytest.param(
            {"local.modelPath": "/saved.gguf"}, {}, {"local": {"modelPath": None}}, "/saved.gguf", id="null-keeps-saved"
        ),
    ],
)
def test_model_path_precedence(
    saved: dict[str, Any], env: dict[str, str], options: dict[str, Any], model_path: str | None
) -> None:
    assert resolve(options, env, saved) == (Settings(model_path=model_path), [])


def test_a_bad_saved_value_names_its_file() -> None:
    settings, problems = resolve(None, NO_ENV, {"local.contextSize": "big", "local.chatModelPath": "/chat.gguf"})
    assert settings == Settings(chat_model_path="/chat.gguf")
    assert problems == [
        f"saved setting ({SAVED_SETTINGS}) local.contextSize='big' ignored: expected a positive integer"
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(None, {}, id="none-saved"),
        pytest.param('{"local.modelPath": "/m.gguf"}', {"local.modelPath": "/m.gguf"}, id="saved"),
        pytest.param("{not json", {}, id="unreadable"),
        pytest.param('["local.modelPath"]', {}, id="not-an-object"),
    ],
)
def test_saved_settings(tmp_path: Path, content: str | None, expected: dict[str, Any]) -> None:
    if content is not None:
        (tmp_path / SAVED_SETTINGS).write_text(content)
    assert saved_settings({"TANDEM_DATA_DIR": str(tmp_path)}) == expected


@pytest.mark.parametrize(
    ("key", "value", "field", "used"),
    [
        pytest.param("local.threads", 100_000, "threads", config.max_threads(), id="threads"),
        pytest.param("local.contextSize", 2**40, "context_size", config.MAX_CONTEXT, id="context"),
        pytest.param("completion.maxTokens", 10**9, "max_tokens", config.Settings.context_size // 2, id="max-tokens"),
        pytest.param("completion.promptTokens", 10**12, "prompt_tokens", config.MAX_CONTEXT, id="prompt-tokens"),
    ],
)
def test_an_absurd_number_is_clamped_with_a_message(key: str, value: int, field: str, used: int) -> None:
    settings, problems = resolve({key: value}, env=NO_ENV)
    assert getattr(settings, field) == used
    [problem] = problems
    assert f"{key}={value}" in problem and f"{used:,} used" in problem


def test_threads_up_to_twice_the_cores_are_kept() -> None:
    most = 2 * (os.cpu_count() or 1)
    assert config.max_threads() == most
    assert resolve({"local.threads": most}, env=NO_ENV) == (Settings(threads=most), [])


def test_max_tokens_leave_half_the_context_to_the_prompt() -> None:
    settings, problems = resolve({"local.contextSize": 512, "completion.maxTokens": 400}, env=NO_ENV)
    assert settings.max_tokens == 256
    assert ["completion.maxTokens=400 leaves no room" in p for p in problems] == [True]


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "infinity"])
def test_amounts_are_finite(value: float) -> None:
    settings, problems = resolve({"cloud.dailyBudgetUsd": value, "cloud.prices": {"m": {"input": value, "output": 1}}})
    assert (settings.daily_budget_usd, settings.prices) == (None, ())
    assert len(problems) == 2
