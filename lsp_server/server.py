"""The LSP layer: the only module that speaks pygls and lsprotocol."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import JsonRPCNotification, LanguageServerProtocol, lsp_method
from pygls.uris import to_fs_path

from lsp_server import __version__
from lsp_server.backends import BackendError
from lsp_server.backends.local import LocalBackend, ModelInfo, embedded_model_path
from lsp_server.completion.engine import Engine, Request, Selected
from lsp_server.config import Settings, cache_dir, data_dir, resolve
from lsp_server.documents import Document, PositionError, apply_change, offset_at
from lsp_server.ledger import Ledger, default_path
from lsp_server.prices import Prices

log = logging.getLogger(__name__)

GHOST_TEXT = "tandem/ghostText"
"""Notification: the ghost text so far while a suggestion streams."""
_IGNORED = "$/tandem/answeredMalformedRequest"


class TandemProtocol(LanguageServerProtocol):
    """Keeps open documents in tandem's own store, where only '\\n' ends a line, as in LSP."""

    _server: TandemServer

    def __init__(self, server: TandemServer, converter: Any) -> None:
        super().__init__(server, converter)
        self.snapshots: dict[Any, Document | None] = {}
        """The document as each pending inline-completion request saw it, by request id."""

    def _handle_request(self, msg_id: Any, method_name: str, params: Any) -> None:
        # A request's handler task starts only after messages read with it are handled: a burst
        # of didChange would show the request a newer text than its position refers to.
        if method_name == types.TEXT_DOCUMENT_INLINE_COMPLETION:
            uri = getattr(getattr(params, "text_document", None), "uri", None)
            doc = self._server.documents.get(uri) if isinstance(uri, str) else None
            self.snapshots[msg_id] = (
                None if doc is None else Document(doc.uri, doc.language_id, doc.version, doc.text)
            )
        super()._handle_request(msg_id, method_name, params)

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if "id" not in data or "method" not in data:
                raise
            # pygls would only log a request it cannot parse; the client would wait forever.
            log.warning("malformed %s request: %s", data["method"], exc.__cause__)
            error = JsonRpcInvalidParams(f"malformed params for {data['method']}: {exc.__cause__}")
            self._send_response(data["id"], None, error.to_response_error())
            return JsonRPCNotification(method=_IGNORED, params=None, jsonrpc=self.VERSION)

    @lsp_method(_IGNORED)
    def ignore(self, params: Any) -> None:
        """Stands in for a malformed request already answered."""

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> None:
        doc = params.text_document
        self._server.documents[doc.uri] = Document(doc.uri, doc.language_id, doc.version, doc.text)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> None:
        doc = self._server.documents.get(params.text_document.uri)
        if doc is None:
            log.warning("change to a document that is not open: %s", params.text_document.uri)
            return
        text = doc.text
        try:
            for change in params.content_changes:
                if isinstance(change, types.TextDocumentContentChangePartial):
                    start, end = change.range.start, change.range.end
                    text = apply_change(
                        text,
                        change.text,
                        (start.line, start.character),
                        (end.line, end.character),
                        self._server.encoding,
                    )
                else:
                    text = change.text
        except PositionError as exc:
            self._server.report_once(f"bad change to {doc.uri}: {exc}; the document was left as it was")
            return
        doc.text, doc.version = text, params.text_document.version

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> None:
        self._server.documents.pop(params.text_document.uri, None)
        if self._server.engine is not None:
            self._server.engine.forget(params.text_document.uri)


class TandemServer(LanguageServer):
    """Server state: settings, open documents, the engine and its backend, the ledger."""

    protocol: TandemProtocol

    def __init__(self) -> None:
        super().__init__("tandem", __version__, protocol_cls=TandemProtocol)
        self.settings = Settings()
        self.documents: dict[str, Document] = {}
        self.backend: LocalBackend | None = None
        self.engine: Engine | None = None
        self.ledger: Ledger | None = None
        self.init_options: Mapping[str, Any] | None = None
        self.shutdown_requested = False
        self._reported: set[str] = set()
        self._ready: asyncio.Event = asyncio.Event()

    @property
    def encoding(self) -> str:
        """The negotiated position encoding: utf-8, utf-16 or utf-32."""
        return str(self.server_capabilities.position_encoding or "utf-16")

    def report_once(self, message: str, kind: types.MessageType = types.MessageType.Error) -> None:
        """Show a problem to the user once per distinct message, and log it."""
        log.log(logging.ERROR if kind == types.MessageType.Error else logging.WARNING, "%s", message)
        if message in self._reported:
            return
        self._reported.add(message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"tandem: {message}"))

    async def configure(self, options: Mapping[str, Any] | None) -> None:
        """Resolve settings, open the ledger, start loading the model."""
        self.settings, problems = resolve(options)
        for problem in problems:
            self.report_once(problem, types.MessageType.Warning)
        settings = self.settings
        loop = asyncio.get_running_loop()
        prices = Prices.load(
            {model: {"input": i, "output": o} for model, i, o in settings.prices},
            energy_usd_per_hour=settings.energy_usd_per_hour,
        )

        def ledger_problem(message: str) -> None:
            # the ledger reports from its writer thread; the protocol lives on the event loop
            loop.call_soon_threadsafe(self.report_once, message, types.MessageType.Warning)

        self.ledger = Ledger(default_path(data_dir()), prices, on_problem=ledger_problem)
        self.backend = LocalBackend(
            settings, lambda: settings.model_path or str(embedded_model_path(cache_dir()))
        )
        self.backend.start().add_done_callback(self._model_loaded)
        self.engine = Engine(self.backend, settings, self._template, self.ledger.record)
        self._ready.set()

    def _model_loaded(self, loaded: asyncio.Future[ModelInfo]) -> None:
        if (error := loaded.exception()) is not None:
            self.report_once(str(error))

    async def _template(self) -> Any:
        assert self.backend is not None
        return (await self.backend.info()).template

    async def ready_engine(self) -> Engine:
        """The engine, once `initialized` has configured the server."""
        await self._ready.wait()
        assert self.engine is not None
        return self.engine


def _workspace_root(server: TandemServer) -> str:
    try:
        root = server.workspace.root_uri
    except RuntimeError:
        return ""
    return to_fs_path(root) or "" if root else ""


def create_server() -> TandemServer:
    """A server with every handler registered."""
    server = TandemServer()

    @server.feature(types.INITIALIZE)
    def initialize(ls: TandemServer, params: types.InitializeParams) -> None:
        options = params.initialization_options
        ls.init_options = options if isinstance(options, Mapping) else None

    @server.feature(types.INITIALIZED)
    async def initialized(ls: TandemServer, params: types.InitializedParams) -> None:
        options = ls.init_options
        workspace = ls.client_capabilities.workspace
        if workspace is not None and workspace.configuration:
            try:
                pulled = await ls.workspace_configuration_async(
                    types.ConfigurationParams(items=[types.ConfigurationItem(section="tandem")])
                )
            except Exception as exc:  # a client that fails this request still gets completions
                log.warning("workspace/configuration failed: %s", exc)
            else:
                if pulled and isinstance(pulled[0], Mapping):
                    options = {**(options or {}), **pulled[0]}
        await ls.configure(options)

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: TandemServer, params: None) -> None:
        ls.shutdown_requested = True
        if ls.backend is not None:
            ls.backend.close()
        if ls.ledger is not None:
            ls.ledger.close()

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        ls: TandemServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList:
        uri = params.text_document.uri
        doc = ls.protocol.snapshots.pop(ls.protocol.msg_id, None)
        if doc is None:
            raise JsonRpcInvalidParams(f"document is not open: {uri}")
        if not ls.settings.enabled:
            return types.InlineCompletionList(items=[])
        pos = params.position
        try:
            cursor = offset_at(doc.text, pos.line, pos.character, ls.encoding)
            selected = _selected(doc.text, params.context.selected_completion_info, ls.encoding)
        except PositionError as exc:
            raise JsonRpcInvalidParams(f"{exc} in {uri}") from exc
        request = Request(
            uri=uri,
            text=doc.text,
            cursor=cursor,
            selected=selected,
            invoked=params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked,
            workspace=_workspace_root(ls),
        )
        version = doc.version
        engine = await ls.ready_engine()  # after the snapshot: the request is about the text as it was

        def partial(text: str) -> None:
            ls.protocol.notify(
                GHOST_TEXT,
                {
                    "uri": uri,
                    "version": version,
                    "position": {"line": pos.line, "character": pos.character},
                    "text": text,
                },
            )

        try:
            suggestion = await engine.complete(request, partial)
        except BackendError as exc:
            ls.report_once(str(exc))
            return types.InlineCompletionList(items=[])
        if suggestion is None:
            return types.InlineCompletionList(items=[])
        info = params.context.selected_completion_info
        replace = info.range if info is not None else types.Range(pos, pos)
        return types.InlineCompletionList(
            items=[
                types.InlineCompletionItem(
                    insert_text=suggestion.text,
                    range=replace,
                    command=types.Command(
                        title="Accepted", command="tandem.accepted", arguments=[suggestion.request_id]
                    ),
                )
            ]
        )

    @server.command("tandem.status")
    async def status(ls: TandemServer, *args: Any) -> dict[str, Any]:
        engine = await ls.ready_engine()
        result: dict[str, Any] = engine.status()
        result["model"] = _model_status(ls)
        result["settings"] = {
            "debounceMs": ls.settings.debounce_ms or "auto",
            "multiline": ls.settings.multiline,
        }
        return result

    @server.command("tandem.usage")
    async def usage(ls: TandemServer, *args: Any) -> dict[str, Any]:
        await ls.ready_engine()
        assert ls.ledger is not None
        ls.ledger.flush()
        return ls.ledger.report()

    @server.command("tandem.accepted")
    async def accepted(ls: TandemServer, *args: Any) -> None:
        await ls.ready_engine()
        if ls.ledger is not None and args and isinstance(args[0], str):
            ls.ledger.record_acceptance(args[0])

    return server


def _selected(text: str, info: types.SelectedCompletionInfo | None, encoding: str) -> Selected | None:
    if info is None:
        return None
    start = offset_at(text, info.range.start.line, info.range.start.character, encoding)
    end = offset_at(text, info.range.end.line, info.range.end.character, encoding)
    return Selected(start, end, info.text)


def _model_status(ls: TandemServer) -> dict[str, Any]:
    backend = ls.backend
    if backend is None:
        return {"state": "not started"}
    if backend.error is not None:
        return {"state": "error", "error": backend.error}
    info = backend.loaded
    if info is None:
        return {"state": "loading"}
    return {
        "state": "ready",
        "name": info.name,
        "path": info.path,
        "fim": info.template.family if info.template else None,
        "contextSize": info.context_size,
        "gpuOffload": info.gpu_offload,
        "loadSeconds": round(info.load_s, 2),
        "file": Path(info.path).name,
    }
