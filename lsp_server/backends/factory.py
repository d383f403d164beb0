"""The one place where settings become a backend class."""

from __future__ import annotations

import os
from typing import Literal

from lsp_server.backends import Backend
from lsp_server.backends.endpoint import EndpointBackend
from lsp_server.backends.local import LocalBackend, embedded_model_path
from lsp_server.backends.openai_compat import OpenAICompatBackend
from lsp_server.config import Settings, cache_dir, endpoint_user

Role = Literal["completion", "chat", "cloud"]
"""completion: inline completions; chat: explain / debug / refactor on this machine; cloud: the same in the cloud."""
ROLES: tuple[Role, ...] = ("completion", "chat", "cloud")

_LOAD_FIELDS = ("n_gpu_layers", "context_size", "flash_attention", "threads")
"""Settings an in-process model is loaded with."""


def make_backend(role: Role, settings: Settings) -> Backend | None:
    """The backend serving `role`; None for chat when the completion backend serves it too, and for the cloud
    when no API key is set."""
    if role == "cloud":
        # The key comes from the environment only: a settings file may be shared or committed.
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            return None
        return OpenAICompatBackend(model=settings.cloud_model, base_url=settings.cloud_base_url, api_key=key)
    if role == "chat":
        chat = _chat_file(settings)
        return None if chat is None else LocalBackend(settings, lambda: chat)
    if settings.local_endpoint:
        # The endpoint's own key only: the cloud's key must never reach another server. The model is asked for.
        return EndpointBackend(
            base_url=settings.local_endpoint,
            kind=settings.endpoint_kind,
            api_key=settings.endpoint_api_key,
            user=endpoint_user(settings),
        )
    return LocalBackend(settings, lambda: settings.model_path or str(embedded_model_path(cache_dir())))


def backend_key(role: Role, settings: Settings) -> tuple[object, ...] | None:
    """The settings `make_backend(role, settings)` depends on (None where it builds nothing): while they stay
    the same, the backend is kept across a change of settings."""
    if role == "cloud":
        return (settings.cloud_model, settings.cloud_base_url)
    if role == "chat":
        chat = _chat_file(settings)
        return None if chat is None else (chat, *_load(settings))
    if settings.local_endpoint:
        return (settings.local_endpoint, settings.endpoint_kind, settings.endpoint_api_key, settings.endpoint_user)
    return (settings.model_path, *_load(settings))


def _chat_file(settings: Settings) -> str | None:
    """The chat model's file when it needs a load of its own; None when the completion backend serves chat."""
    chat = settings.chat_model_path
    if chat is None or settings.local_endpoint:
        return None
    if settings.model_path is not None and os.path.realpath(chat) == os.path.realpath(settings.model_path):
        return None  # one file, one load: two copies of a model exhaust VRAM
    return chat


def _load(settings: Settings) -> tuple[object, ...]:
    return tuple(getattr(settings, field) for field in _LOAD_FIELDS)
