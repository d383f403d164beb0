"""Wire options (camelCase, as editors send them) resolved into frozen settings."""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

Multiline = Literal["auto", "always", "never"]
EndpointKind = Literal["auto", "llama-server", "openai"]
DecodeAhead = Literal["auto", "off"]
Route = Literal["local", "cloud", "auto"]
ROUTED_TASKS = ("explain", "debug", "refactor")
"""The tasks `routes` sends to the local model or the cloud; completions always run locally."""


@dataclass(frozen=True)
class Settings:
    """Resolved settings; every field has a default."""

    model_path: str | None = None
    """GGUF file of the local completion model; None means the embedded default."""
    chat_model_path: str | None = None
    """GGUF file of the local chat model (explain / debug when the cloud is off); None: the completion model."""
    n_gpu_layers: int | None = None
    """Layers offloaded to the GPU; -1 offloads all; None (auto) fits them to free VRAM."""
    context_size: int = 4096
    """Context window of the local model in tokens."""
    flash_attention: bool = True
    """Use flash attention where the build supports it."""
    threads: int | None = None
    """CPU threads for the local model; None: the fastest count measured at load (all physical cores or fewer)."""
    debounce_ms: int | None = None
    """Fixed debounce before a completion starts; None adapts to typing speed."""
    decode_ahead: DecodeAhead = "auto"
    """While the debounce runs: evaluate the prompt and decode its first line ahead, less when what is decoded
    ahead is rarely used (auto); or leave the model idle until the debounce is over (off: for a battery)."""
    min_confidence: float | Literal["auto"] = "auto"
    """The chance of being kept below which a suggestion is not shown (0: show all); auto: tuned on `tandem eval`
    (`confidence.AUTO`). The chance is learned per kind of context from what the user accepted."""
    multiline: Multiline = "auto"
    """Multi-line ghost text: at block starts (auto), always, or never."""
    max_tokens: int = 96
    """Most tokens generated for one completion."""
    prompt_tokens: int = 1536
    """Token budget of the completion prompt (prefix and suffix together)."""
    recent_chunks: int = 8
    """Chunks around recent edits kept for completion prompts (at most a quarter of the budget); 0 turns it off."""
    enabled: bool = True
    """Inline completions on or off."""
    local_endpoint: str | None = None
    """OpenAI-compatible server (vLLM, llama-server, a team fleet) that serves completions."""
    endpoint_kind: EndpointKind = "auto"
    """The API `local.endpoint` speaks: llama-server's native one, the OpenAI one, or auto (detected)."""
    endpoint_api_key: str | None = field(default=None, repr=False)
    """Bearer token for `local.endpoint`; None: TANDEM_ENDPOINT_API_KEY, else none."""
    endpoint_user: str | None = None
    """The user id sent to `local.endpoint` (X-Tandem-User); None: a random id kept in the data dir."""
    cloud_model: str = "gpt-4o"
    """Cloud chat model for explain / debug / refactor."""
    cloud_base_url: str | None = None
    """OpenAI-compatible base URL; None uses OPENAI_BASE_URL or the SDK's default."""
    daily_budget_usd: float | None = None
    """Cloud spend allowed per day; None is unlimited."""
    monthly_budget_usd: float | None = None
    """Cloud spend allowed per calendar month; None is unlimited."""
    over_budget: Literal["local", "refuse"] = "local"
    """What a cloud request over budget does: fall back to the local model, or refuse."""
    routes: tuple[tuple[str, Route], ...] = (
        ("explain", "auto"),
        ("debug", "auto"),
        ("refactor", "auto"),
    )
    """Which side serves each command; auto sends it to the cloud when a key is set."""
    cloud_deny: tuple[str, ...] = (".env*", "*.pem", "*.key", "id_rsa*", "secrets.*")
    """Globs of files whose text never goes to the cloud."""
    prices: tuple[tuple[str, float, float], ...] = ()
    """Price overrides per model: (model, input USD per 1M tokens, output USD per 1M tokens)."""
    energy_usd_per_hour: float | None = None
    """Optional estimate of what running the local model costs per hour of generation."""

    def route(self, task: str) -> Route:
        """The configured route of a task."""
        return dict(self.routes).get(task, "auto")


MAX_CONTEXT = 2**20
"""The largest `local.contextSize`: about the longest context any model is trained for."""
MAX_COMPLETION_TOKENS = 2048
"""The largest `completion.maxTokens`: a suggestion is a few lines, a block at most."""


class Clamped(ValueError):
    """A value out of bounds, replaced by the nearest bound (the message says why)."""

    def __init__(self, message: str, value: int) -> None:
        super().__init__(message)
        self.value = value


def max_threads() -> int:
    """The most CPU threads the local model may use: twice this machine's cores (more only slows it down, and
    llama.cpp aborts the process when it cannot allocate their buffers)."""
    return 2 * (os.cpu_count() or 1)


# wire key -> (field name, coerce); coerce raises ValueError/TypeError on a bad value, Clamped on one out of bounds.
def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("expected a positive integer")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 64:
        raise ValueError("expected a whole number from 0 to 64")
    return value


def _at_most(high: Callable[[], int], what: str) -> Callable[[Any], int]:
    """A positive integer, clamped to `high()`, which is `what`."""

    def coerce(value: Any) -> int:
        limit = high()
        if _positive_int(value) > limit:
            raise Clamped(f"is more than {what} ({limit:,}): {limit:,} used", limit)
        return int(value)

    return coerce


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _optional_path(value: Any) -> str | None:
    if value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("expected a file path")
    return os.path.expanduser(value)


def _gpu_layers(value: Any) -> int | None:
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise ValueError('expected "auto", -1 (all) or a number of layers')
    return value


def _debounce(value: Any) -> int | None:
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5000:
        raise ValueError('expected "auto" or milliseconds between 0 and 5000')
    return value


def _multiline(value: Any) -> Multiline:
    if value not in ("auto", "always", "never"):
        raise ValueError('expected "auto", "always" or "never"')
    return value  # type: ignore[no-any-return]


def _decode_ahead(value: Any) -> DecodeAhead:
    if value not in ("auto", "off"):
        raise ValueError('expected "auto" or "off"')
    return value  # type: ignore[no-any-return]


def _min_confidence(value: Any) -> float | Literal["auto"]:
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError('expected "auto" or a chance between 0 and 1')
    return float(value)


def _optional_str(value: Any) -> str | None:
    if value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _endpoint_kind(value: Any) -> EndpointKind:
    if value not in ("auto", "llama-server", "openai"):
        raise ValueError('expected "auto", "llama-server" or "openai"')
    return value  # type: ignore[no-any-return]


def _header_value(value: Any) -> str | None:
    if value == "":
        return None
    if not isinstance(value, str) or not value.isprintable() or not value.isascii():
        raise ValueError("expected printable ASCII text")
    return value


def _model(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a model name")
    return value


def _usd(value: Any) -> float:
    if not _amount(value):
        raise ValueError("expected a non-negative amount in USD")
    return float(value)


def _amount(value: Any) -> bool:
    """A finite non-negative number (JSON's NaN and Infinity, which Python reads, are not amounts)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _over_budget(value: Any) -> str:
    if value not in ("local", "refuse"):
        raise ValueError('expected "local" or "refuse"')
    return str(value)


def _routes(value: Any) -> tuple[tuple[str, str], ...]:
    expected = f"expected an object mapping {', '.join(ROUTED_TASKS)} to local, cloud or auto"
    if not isinstance(value, Mapping):
        raise ValueError(expected)
    # Clients written when completions had a route still send one: completions always run locally.
    routes = {task: route for task, route in value.items() if task != "completion"}
    if any(task not in ROUTED_TASKS or route not in ("local", "cloud", "auto") for task, route in routes.items()):
        raise ValueError(expected)
    merged = dict(Settings.routes) | routes
    return tuple(merged.items())


def _globs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(g, str) and g for g in value):
        raise ValueError("expected a list of glob patterns")
    return tuple(value)


def _prices(value: Any) -> tuple[tuple[str, float, float], ...]:
    """`{"my-model": {"input": 0.5, "output": 1.5}}`, USD per million tokens."""
    if not isinstance(value, Mapping):
        raise ValueError('expected {"model": {"input": USD, "output": USD}}')
    rows = []
    for model, price in value.items():
        if not isinstance(price, Mapping) or not all(_amount(price.get(k)) for k in ("input", "output")):
            raise ValueError(f"price of {model!r} needs non-negative input and output")
        rows.append((str(model), float(price["input"]), float(price["output"])))
    return tuple(rows)


_WIRE: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "local.modelPath": ("model_path", _optional_path),
    "local.chatModelPath": ("chat_model_path", _optional_path),
    "local.nGpuLayers": ("n_gpu_layers", _gpu_layers),
    "local.contextSize": ("context_size", _at_most(lambda: MAX_CONTEXT, "the longest context models are trained for")),
    "local.flashAttention": ("flash_attention", _bool),
    "local.threads": ("threads", _at_most(max_threads, "twice this machine's CPU cores")),
    "completion.debounceMs": ("debounce_ms", _debounce),
    "completion.multiline": ("multiline", _multiline),
    "completion.decodeAhead": ("decode_ahead", _decode_ahead),
    "completion.minConfidence": ("min_confidence", _min_confidence),
    "completion.maxTokens": ("max_tokens", _at_most(lambda: MAX_COMPLETION_TOKENS, "a suggestion needs")),
    "completion.promptTokens": ("prompt_tokens", _at_most(lambda: MAX_CONTEXT, "the longest context")),
    "completion.enabled": ("enabled", _bool),
    "completion.recentChunks": ("recent_chunks", _count),
    "local.endpoint": ("local_endpoint", _optional_str),
    "local.endpointKind": ("endpoint_kind", _endpoint_kind),
    "local.endpointApiKey": ("endpoint_api_key", _header_value),
    "local.endpointUser": ("endpoint_user", _header_value),
    "local.energyUsdPerHour": ("energy_usd_per_hour", _usd),
    "cloud.model": ("cloud_model", _model),
    "cloud.baseUrl": ("cloud_base_url", _optional_str),
    "cloud.dailyBudgetUsd": ("daily_budget_usd", _usd),
    "cloud.monthlyBudgetUsd": ("monthly_budget_usd", _usd),
    "cloud.overBudget": ("over_budget", _over_budget),
    "cloud.prices": ("prices", _prices),
    "routes": ("routes", _routes),
    "privacy.cloudDeny": ("cloud_deny", _globs),
}


_OBJECT_KEYS = {"routes", "cloud.prices"}
_SECRET_KEYS = {"local.endpointApiKey"}


def flatten(options: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Wire options as dotted keys, from nested objects (`{"local": {"modelPath": …}}`) and dotted keys alike."""
    flat: dict[str, Any] = {}
    for key, value in options.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and name not in _OBJECT_KEYS:
            flat.update(flatten(value, f"{name}."))
        elif name in _OBJECT_KEYS and value == []:
            flat[name] = {}  # Neovim sends an empty Lua table as a JSON list
        else:
            flat[name] = value
    return flat


def resolve(
    options: Mapping[str, Any] | None,
    env: Mapping[str, str] | None = None,
    saved: Mapping[str, Any] | None = None,
) -> tuple[Settings, list[str]]:
    """Resolve wire options into settings; each bad value becomes a problem and its default.

    `saved` (what `tandem models use` wrote) comes first, then TANDEM_MODEL and TANDEM_ENDPOINT_API_KEY, then the
    editor's options.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    problems: list[str] = []
    _apply(flatten(saved or {}), values, problems, f"saved setting ({SAVED_SETTINGS})")
    if env.get("TANDEM_MODEL"):
        values["model_path"] = os.path.expanduser(env["TANDEM_MODEL"])
    if env.get("TANDEM_ENDPOINT_API_KEY"):
        values["endpoint_api_key"] = env["TANDEM_ENDPOINT_API_KEY"]
    _apply(flatten(options or {}), values, problems, "tandem setting")
    settings = Settings(**values)
    room = settings.context_size // 2
    if settings.max_tokens > room:  # the prompt would be cut to nothing to make room for the reply
        problems.append(
            f"completion.maxTokens={settings.max_tokens} leaves no room for the prompt in a context of "
            f"{settings.context_size:,} tokens (local.contextSize): {room:,} used"
        )
        settings = replace(settings, max_tokens=room)
    return settings, problems


def _apply(flat: Mapping[str, Any], values: dict[str, Any], problems: list[str], source: str) -> None:
    for key, value in flat.items():
        if key not in _WIRE:
            continue  # keys of other features or newer clients are not errors
        if value is None:
            continue  # null (Neovim's vim.NIL) means not set, as the editor clients' empty values do
        name, coerce = _WIRE[key]
        try:
            coerced = coerce(value)
        except Clamped as exc:
            problems.append(f"{source} {key}={value!r} {exc}")
            coerced = exc.value
        except (TypeError, ValueError) as exc:
            shown = "(hidden)" if key in _SECRET_KEYS else repr(value)  # a key, even a malformed one, is never logged
            problems.append(f"{source} {key}={shown} ignored: {exc}")
            continue
        if name in ("model_path", "chat_model_path") and coerced is None:
            continue  # an empty setting leaves TANDEM_MODEL, a saved model or the default in place
        values[name] = coerced


SAVED_SETTINGS = "settings.json"
"""File in the data dir where `tandem models use` saves settings; editor settings override it."""


def saved_settings(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings `tandem models use` saved (flat wire keys); empty when there are none or unreadable."""
    path = data_dir(env) / SAVED_SETTINGS
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logging.getLogger(__name__).warning("saved settings %s ignored: %s", path, exc)
        return {}
    return loaded if isinstance(loaded, dict) else {}


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where tandem keeps its ledger and logs (`TANDEM_DATA_DIR`, else the platform's data dir)."""
    env = os.environ if env is None else env
    if env.get("TANDEM_DATA_DIR"):
        return Path(env["TANDEM_DATA_DIR"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("tandem", appauthor=False))


USER_ID_FILE = "endpoint-user"
"""File in the data dir holding the random id sent to a team's endpoint when `local.endpointUser` is not set."""


def endpoint_user(settings: Settings, env: Mapping[str, str] | None = None) -> str:
    """The id that keeps this user on one replica behind a balancer: the setting, else a random id made once and
    kept in the data dir (it says nothing about who the user is)."""
    if settings.endpoint_user:
        return settings.endpoint_user
    path = data_dir(env) / USER_ID_FILE
    try:
        kept = path.read_text(encoding="ascii").strip()
        if kept:
            return kept
    except (OSError, UnicodeDecodeError):
        pass
    made = uuid.uuid4().hex[:16]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(made + "\n", encoding="ascii")
    except OSError as exc:  # the id then lasts as long as the process; a balancer copes
        logging.getLogger(__name__).warning("endpoint user id not kept in %s: %s", path, exc)
    return made


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where tandem keeps files it can recreate, such as the assembled embedded model."""
    env = os.environ if env is None else env
    if env.get("TANDEM_CACHE_DIR"):
        return Path(env["TANDEM_CACHE_DIR"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("tandem", appauthor=False))
