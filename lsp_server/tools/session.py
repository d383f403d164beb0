"""An editor-like LSP client session against a real `tandem serve` subprocess (demo and benchmarks)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient


def plain(value: Any) -> Any:
    """pygls hands untyped JSON over as namedtuples; give back dicts and lists."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _position(text: str) -> types.Position:
    lines = text.split("\n")
    return types.Position(line=len(lines) - 1, character=len(lines[-1].encode("utf-16-le")) // 2)


class Session:
    """Types at the end of one document the way an editor reports it: didChange, then a request."""

    def __init__(self, uri: str, on_ghost_text: Callable[[str, int], None] = lambda text, version: None) -> None:
        self.uri = uri
        self.text = ""
        self.version = 0
        self.client = LanguageClient("tandem-session", "1")
        self.client.feature("tandem/ghostText")(lambda params: on_ghost_text(params.text, params.version))
        self.messages: list[str] = []
        self.client.feature(types.WINDOW_SHOW_MESSAGE)(lambda params: self.messages.append(params.message))
        self._drain: asyncio.Task[None] | None = None

    async def start(self, env: dict[str, str], log_path: Path, options: dict[str, Any] | None = None) -> None:
        """Start the server, initialize it (utf-16 positions, as VS Code) and wait for the model."""
        await self.client.start_io(sys.executable, "-m", "lsp_server", "serve", env={**os.environ, **env})
        server = self.client._server  # pygls keeps the process private
        assert server is not None and server.stderr is not None
        self._drain = asyncio.create_task(_drain(server.stderr, log_path))
        await self.client.initialize_async(
            types.InitializeParams(capabilities=types.ClientCapabilities(), initialization_options=options)
        )
        self.client.initialized(types.InitializedParams())

    @property
    def pid(self) -> int:
        """The server process's id."""
        server = self.client._server
        assert server is not None
        return server.pid

    async def model(self) -> dict[str, Any]:
        """The model's status once it has finished loading (or failed)."""
        while (status := await self.command("tandem.status"))["model"]["state"] == "loading":
            await asyncio.sleep(0.05)
        model: dict[str, Any] = status["model"]
        return model

    def open(self, text: str, language_id: str = "python", uri: str | None = None) -> None:
        """Open the document with `text` (another document when `uri` is given: typing goes on there)."""
        self.uri = uri or self.uri
        self.text = text
        self.version = 1
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(types.TextDocumentItem(self.uri, language_id, self.version, text))
        )

    def keystroke(self, chars: str) -> asyncio.Future[Any]:
        """Append `chars` at the end and ask for ghost text there, as an editor does on each key."""
        at = _position(self.text)
        self.version += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=self.uri, version=self.version),
                content_changes=[types.TextDocumentContentChangePartial(range=types.Range(at, at), text=chars)],
            )
        )
        self.text += chars
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=self.uri),
            position=_position(self.text),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        )
        return asyncio.ensure_future(self.client.text_document_inline_completion_async(params))

    async def command(self, name: str) -> dict[str, Any]:
        """Run a `tandem.*` command and return its result as plain data."""
        result = await self.client.workspace_execute_command_async(types.ExecuteCommandParams(command=name))
        data: dict[str, Any] = plain(result)
        return data

    async def stop(self) -> None:
        """Shut the server down the way an editor does."""
        await self.client.shutdown_async(None)
        self.client.exit(None)
        await self.client.stop()  # type: ignore[no-untyped-call]
        if self._drain is not None:
            self._drain.cancel()


async def _drain(stream: asyncio.StreamReader, path: Path) -> None:
    with path.open("ab") as log:
        while line := await stream.readline():
            log.write(line)
            log.flush()


def now_ms() -> float:
    """A monotonic clock in milliseconds."""
    return time.perf_counter() * 1000
