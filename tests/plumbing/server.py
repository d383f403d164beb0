"""`tandem serve` on scripted backends instead of models (`python -m tests.plumbing.server`): plumbing tests of
the LSP layer start this through `create_server(make_app=...)`; what models do is tested end to end."""

from __future__ import annotations

from lsp_server.app import App, Report
from lsp_server.backends import Backend
from lsp_server.backends.factory import Role
from lsp_server.config import Settings
from lsp_server.server import create_server
from tests.standin import ScriptedBackend

REPLY = "a + b"
"""What every scripted model answers."""


def scripted(role: Role, settings: Settings) -> Backend | None:
    """A scripted model named after the context size it was built for; no cloud, no chat model of its own."""
    return ScriptedBackend(REPLY, model=f"scripted-{settings.context_size}") if role == "completion" else None


def make_app(settings: Settings, root: str, report: Report) -> App:
    """The real application, on scripted backends."""
    return App(settings, root, report, make_backend=scripted)


if __name__ == "__main__":
    create_server(make_app).start_io()
