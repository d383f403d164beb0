"""The LSP layer: the only module that speaks pygls and lsprotocol."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import JsonRPCNotification, LanguageServerProtocol, lsp_method
from pygls.uris import to_fs_path

from lsp_server import __version__
from lsp_server.assist import AssistRequest, AssistResult, run_assist
from lsp_server.backends import BackendError
from lsp_server.backends.local import LocalBackend, embedded_model_path
from lsp_server.backends.openai_compat import OpenAICompatBackend
from lsp_server.budget import Budget
from lsp_server.completion.engine import Engine, Request, Selected, Timing
from lsp_server.completion.prompt import FimTemplate, template_from_gguf
from lsp_server.config import Settings, cache_dir, data_dir, resolve, saved_settings
from lsp_server.documents import Document, PositionError, apply_change, offset_at, span_at, units
from lsp_server.ledger import Ledger, default_path
from lsp_server.prices import Prices
from lsp_server.privacy import AuditLog
from lsp_server.router import Router

log = logging.getLogger(__name__)

GHOST_TEXT = "tandem/ghostText"
"""Notification: the ghost text so far while a suggestion streams."""
ASSIST_CHUNK = "tandem/assistChunk"
"""Notification: the next chunk of an explain / debug / refactor reply."""
ASSIST_COMMANDS = frozenset({"tandem.explain", "tandem.debug", "tandem.refactor"})
"""The commands that ask a model about a selection (pygls cannot cancel them; tandem does)."""
DEFAULT_INSTRUCTION = "Make this code clearer and simpler without changing what it does."
"""The refactor instruction when the client sends none (a code action does not ask)."""
AUDIT_FILE = "cloud-audit.jsonl"
"""The audit log of cloud requests, in tandem's data directory."""
_IGNORED = "$/tandem/answeredMalformedRequest"
_PROGRESS_CREATE_TIMEOUT_S = 5.0


class TandemProtocol(LanguageServerProtocol):
    """Keeps open documents in tandem's own store, where only '\\n' ends a line, as in LSP."""

    _server: TandemServer

    def __init__(self, server: TandemServer, converter: Any) -> None:
        super().__init__(server, converter)
        self.snapshots: dict[Any, Document | None] = {}
        """The document as each pending inline-completion or assist request saw it, by request id."""
        self.cancels: dict[Any, threading.Event] = {}
        """The cancel event of each running assist command, by request id."""
        self.received: dict[Any, float] = {}
        """When each pending inline-completion request was read (perf_counter), by request id."""
        self.timings: dict[Any, Timing] = {}
        """The stage times of each pending inline-completion request, by request id."""
        self.exited = False

    def _handle_request(self, msg_id: Any, method_name: str, params: Any) -> None:
        # A request's handler task starts only after messages read with it are handled: a burst
        # of didChange would show the request a newer text than its position refers to.
        uri: Any = None
        if method_name == types.TEXT_DOCUMENT_INLINE_COMPLETION:
            uri = getattr(getattr(params, "text_document", None), "uri", None)
        elif method_name == types.WORKSPACE_EXECUTE_COMMAND and getattr(params, "command", None) in ASSIST_COMMANDS:
            self.cancels[msg_id] = threading.Event()
            arguments = params.arguments or [None]
            uri = arguments[0].get("uri") if isinstance(arguments[0], Mapping) else None
        else:
            super()._handle_request(msg_id, method_name, params)
            return
        doc = self._server.documents.get(uri) if isinstance(uri, str) else None
        self.snapshots[msg_id] = None if doc is None else Document(doc.uri, doc.language_id, doc.version, doc.text)
        super()._handle_request(msg_id, method_name, params)

    def _handle_cancel_notification(self, msg_id: Any) -> None:
        # pygls cannot cancel a command's task: stop its stream, and the command answers with
        # what it has (the LSP allows a result on cancel) once the ledger has recorded it.
        if (cancel := self.cancels.get(msg_id)) is not None:
            log.info("cancelling command request %s", msg_id)
            cancel.set()
            return
        super()._handle_cancel_notification(msg_id)

    def _send_handler_result(self, future: Any, *, msg_id: Any) -> None:
        self.cancels.pop(msg_id, None)
        self.snapshots.pop(msg_id, None)
        super()._send_handler_result(future, msg_id=msg_id)
        received, timing = self.received.pop(msg_id, None), self.timings.pop(msg_id, None)
        if received is not None and timing is not None:
            timing.server = (time.perf_counter() - received) * 1000  # the answer is written by now

    def structure_message(self, data: dict[str, Any]) -> Any:
        read = time.perf_counter()
        try:
            message = super().structure_message(data)
            if data.get("method") == types.TEXT_DOCUMENT_INLINE_COMPLETION and "id" in data:
                self.received[data["id"]] = read
            return message
        except JsonRpcException as exc:
            if "id" not in data or "method" not in data:
                raise
            # pygls would only log a request it cannot parse; the client would wait forever.
            log.warning("malformed %s request: %s", data["method"], exc.__cause__)
            error = JsonRpcInvalidParams(f"malformed params for {data['method']}: {exc.__cause__}")
            self._send_response(data["id"], None, error.to_response_error())
            return JsonRPCNotification(method=_IGNORED, params=None, jsonrpc=self.VERSION)

    @lsp_method(types.EXIT)
    def lsp_exit(self, *args: Any) -> Generator[Any, Any, None]:
        self.exited = True  # the output closes now: answers still due are dropped, not reported as errors
        yield from super().lsp_exit(*args)

    def _send_data(self, data: Any) -> None:
        # pygls reports a failed write as an error, whose report fails to write too: a flood of tracebacks.
        if self.exited:
            log.debug("the client has exited: %s not sent", type(data).__name__)
            return
        super()._send_data(data)

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
                    text = apply_change(
                        text, change.text, _pair(change.range.start), _pair(change.range.end), self._server.encoding
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


LocalSide = LocalBackend | OpenAICompatBackend
"""What serves completions and local chat: llama.cpp in process, or a team's endpoint."""


def make_local_backend(settings: Settings) -> LocalSide:
    """The local side from settings: `local.endpoint` when set, else the in-process model."""
    if settings.local_endpoint:
        # No key: the cloud's key must never reach another server. The model is asked for.
        return OpenAICompatBackend(model="", base_url=settings.local_endpoint, api_key=None, name="endpoint")
    return LocalBackend(settings, lambda: settings.model_path or str(embedded_model_path(cache_dir())))


def make_chat_backend(settings: Settings, completion: LocalSide) -> LocalSide:
    """The local side for explain / debug: `local.chatModelPath`, or the completion side when it names the same file."""
    chat = settings.chat_model_path
    if chat is None or settings.local_endpoint or (
        settings.model_path is not None and os.path.realpath(chat) == os.path.realpath(settings.model_path)
    ):
        return completion  # one file, one load: two copies of a model exhaust VRAM
    return LocalBackend(settings, lambda: chat)


class TandemServer(LanguageServer):
    """Server state: settings, open documents, the engine, the router and their backends, the ledger."""

    protocol: TandemProtocol

    def __init__(self) -> None:
        super().__init__("tandem", __version__, protocol_cls=TandemProtocol)
        self.settings = Settings()
        self.documents: dict[str, Document] = {}
        self.local: LocalSide | None = None
        self.local_chat: LocalSide | None = None
        """The local side that runs explain / debug; the same object as `local` unless another file is set."""
        self.cloud: OpenAICompatBackend | None = None
        self.engine: Engine | None = None
        self.router: Router | None = None
        self.ledger: Ledger | None = None
        self.init_options: Mapping[str, Any] | None = None
        self.shutdown_requested = False
        self.assists: set[asyncio.Task[Any]] = set()
        """Running explain / debug / refactor commands."""
        self._pending: set[asyncio.Future[Any]] = set()
        """The local side's start (model load, or asking an endpoint for its model) until it is done."""
        self._reported: set[str] = set()
        self._ready: asyncio.Event = asyncio.Event()

    @property
    def encoding(self) -> str:
        """The negotiated position encoding: utf-8, utf-16 or utf-32."""
        encoding = self.server_capabilities.position_encoding or "utf-16"
        # str() of the enum is its name ("PositionEncodingKind.Utf16"), not the wire value.
        return encoding.value if isinstance(encoding, types.PositionEncodingKind) else encoding

    def report_once(self, message: str, kind: types.MessageType = types.MessageType.Error) -> None:
        """Show a problem to the user once per distinct message, and log it."""
        level = {types.MessageType.Error: logging.ERROR, types.MessageType.Warning: logging.WARNING}
        log.log(level.get(kind, logging.INFO), "%s", message)
        if message in self._reported:
            return
        self._reported.add(message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"tandem: {message}"))

    async def current_options(self, pushed: Mapping[str, Any] | None = None) -> Mapping[str, Any] | None:
        """initializationOptions, overridden by the client's `tandem` configuration as it is now."""
        options = {**(self.init_options or {}), **(pushed or {})}
        workspace = self.client_capabilities.workspace
        if workspace is not None and workspace.configuration:
            try:
                pulled = await self.workspace_configuration_async(
                    types.ConfigurationParams(items=[types.ConfigurationItem(section="tandem")])
                )
            except Exception as exc:  # a client that fails this request still gets completions
                log.warning("workspace/configuration failed: %s", exc)
            else:
                if pulled and isinstance(pulled[0], Mapping):
                    options.update(pulled[0])
        return options or None

    async def configure(self, options: Mapping[str, Any] | None) -> None:
        """Resolve settings, open the ledger, start the local side, set up the cloud route."""
        self.settings, problems = resolve(options, saved=saved_settings())
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
        local = self.local = make_local_backend(settings)
        started = local.start() if isinstance(local, LocalBackend) else asyncio.ensure_future(local.resolve_model())
        self._pending.add(started)
        started.add_done_callback(self._local_started)
        chat = self.local_chat = make_chat_backend(settings, local)
        if chat is not local:
            assert isinstance(chat, LocalBackend)
            chat_started = chat.start()
            self._pending.add(chat_started)
            chat_started.add_done_callback(self._local_started)
        self.engine = Engine(local, settings, self._template, self.ledger.record)
        # The key comes from the environment only: a settings file may be shared or committed.
        key = os.environ.get("OPENAI_API_KEY")
        self.cloud = (
            OpenAICompatBackend(model=settings.cloud_model, base_url=settings.cloud_base_url, api_key=key)
            if key
            else None
        )
        budget = Budget(self.ledger, prices, settings.daily_budget_usd, settings.monthly_budget_usd)
        self.router = Router(
            settings,
            chat,
            self.cloud,
            budget.check,
            _workspace_root(self) or None,
            ledger=self.ledger,
            audit=AuditLog(data_dir() / AUDIT_FILE),
        )
        self._ready.set()

    def _local_started(self, started: asyncio.Future[Any]) -> None:
        self._pending.discard(started)
        if not started.cancelled() and (error := started.exception()) is not None:
            self.report_once(str(error))

    async def _template(self) -> FimTemplate | None:
        local = self.local
        if isinstance(local, LocalBackend):
            return (await local.info()).template
        assert local is not None
        # An endpoint's GGUF metadata is out of reach: the family is known by the model's name.
        return template_from_gguf({}, lambda token: "", await local.resolve_model())

    async def ready_engine(self) -> Engine:
        """The engine, once `initialized` has configured the server."""
        await self._ready.wait()
        assert self.engine is not None
        return self.engine

    async def reconfigure(self, options: Mapping[str, Any] | None) -> None:
        """Apply changed settings: everything built from them starts anew."""
        log.info("settings changed: starting the local model, the ledger and the cloud route anew")
        self._ready.clear()  # requests wait for the new engine rather than meet a closed one
        await self.close()
        await self.configure(options)

    async def close(self) -> None:
        """Stop running commands (they record what they spent), the backends and the ledger."""
        for cancel in self.protocol.cancels.values():
            cancel.set()
        if self.assists:
            await asyncio.wait(self.assists, timeout=5)
        for side in {id(s): s for s in (self.local, self.local_chat)}.values():
            if isinstance(side, LocalBackend):
                side.close()
        for backend in (self.local, self.cloud):
            if isinstance(backend, OpenAICompatBackend):
                await backend.aclose()
        if self.ledger is not None:
            self.ledger.close()


def _other_documents(server: TandemServer, doc: Document, most: int = 8) -> tuple[tuple[str, str], ...]:
    """The other open documents in `doc`'s language, most recently opened first, for prompt context."""
    others = [(d.uri, d.text) for d in server.documents.values() if d.language_id == doc.language_id]
    others = [(uri, text) for uri, text in others if uri != doc.uri]
    return tuple(reversed(others[-most:]))


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
        await ls.configure(await ls.current_options())

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: TandemServer, params: types.DidChangeConfigurationParams) -> None:
        await ls.ready_engine()
        pushed = params.settings.get("tandem") if isinstance(params.settings, Mapping) else None
        options = await ls.current_options(pushed if isinstance(pushed, Mapping) else None)
        if resolve(options, saved=saved_settings())[0] == ls.settings:
            return
        await ls.reconfigure(options)

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: TandemServer, params: None) -> None:
        ls.shutdown_requested = True
        await ls.close()

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: TandemServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
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
            others=_other_documents(ls, doc),
        )
        version = doc.version
        engine = await ls.ready_engine()  # after the snapshot: the request is about the text as it was
        assert ls.router is not None
        if (denied := ls.router.endpoint_denied(to_fs_path(uri) or uri)) is not None:
            ls.report_once(f"{denied} No completions in this file.", types.MessageType.Info)
            return types.InlineCompletionList(items=[])

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

        timing = ls.protocol.timings[ls.protocol.msg_id] = Timing()
        try:
            suggestion = await engine.complete(request, partial, timing)
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

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(
            code_action_kinds=[
                types.CodeActionKind.Refactor,
                types.CodeActionKind.RefactorRewrite,
                types.CodeActionKind.QuickFix,
            ]
        ),
    )
    def code_action(ls: TandemServer, params: types.CodeActionParams) -> list[types.CodeAction | types.Command] | None:
        doc = ls.documents.get(params.text_document.uri)
        if doc is None:
            return None
        actions = _code_actions(doc, params.range, params.context, ls.encoding)
        text_document = ls.client_capabilities.text_document
        support = text_document.code_action if text_document is not None else None
        if support is not None and support.code_action_literal_support is not None:
            return list(actions)
        return [action.command for action in actions if action.command is not None]

    @server.command("tandem.explain")
    async def explain(ls: TandemServer, *args: Any) -> dict[str, Any]:
        return await _assist(ls, "explain", args)

    @server.command("tandem.debug")
    async def debug(ls: TandemServer, *args: Any) -> dict[str, Any]:
        return await _assist(ls, "debug", args)

    @server.command("tandem.refactor")
    async def refactor(ls: TandemServer, *args: Any) -> dict[str, Any]:
        return await _assist(ls, "refactor", args)

    @server.command("tandem.status")
    async def status(ls: TandemServer, *args: Any) -> dict[str, Any]:
        engine = await ls.ready_engine()
        result: dict[str, Any] = engine.status()
        result["model"] = _model_status(ls.local)
        result["chatModel"] = _model_status(ls.local_chat)
        result["modelLoads"] = len({id(s) for s in (ls.local, ls.local_chat) if isinstance(s, LocalBackend)})
        result["settings"] = {
            "debounceMs": "auto" if ls.settings.debounce_ms is None else ls.settings.debounce_ms,
            "multiline": ls.settings.multiline,
        }
        cloud = ls.cloud
        result["backends"] = {
            "local": result["model"],
            "cloud": {
                "configured": cloud is not None,
                "healthy": cloud is not None and cloud.healthy,
                "lastError": None if cloud is None else cloud.last_error,
                "model": ls.settings.cloud_model,
            },
        }
        return result

    @server.command("tandem.usage")
    async def usage(ls: TandemServer, *args: Any) -> dict[str, Any]:
        await ls.ready_engine()
        ledger = ls.ledger
        assert ledger is not None

        def report() -> dict[str, Any]:
            ledger.flush()
            return ledger.report()

        return await asyncio.to_thread(report)  # waits on the ledger's writer, never on the event loop

    @server.command("tandem.accepted")
    async def accepted(ls: TandemServer, *args: Any) -> None:
        await ls.ready_engine()
        if ls.ledger is not None and args and isinstance(args[0], str):
            ls.ledger.record_acceptance(args[0])

    return server


@dataclass(frozen=True)
class _AssistArgs:
    """The argument object of tandem.explain / debug / refactor, validated."""

    uri: str
    range: types.Range
    instruction: str
    error_text: str
    diagnostics: tuple[str, ...]
    id: str | int
    apply: bool


def _assist_args(task: str, args: Sequence[Any]) -> _AssistArgs:
    """The command's one argument object, or InvalidParams saying what is wrong with it."""
    usage = f'tandem.{task} takes one argument {{"uri", "range": {{"start", "end"}}, "instruction"?}}'
    if len(args) != 1 or not isinstance(args[0], Mapping):
        raise JsonRpcInvalidParams(usage)
    arg = args[0]
    uri = arg.get("uri")
    if not isinstance(uri, str):
        raise JsonRpcInvalidParams(f"{usage}: uri must be a string")
    rng = arg.get("range")
    ends = [rng.get(k) if isinstance(rng, Mapping) else None for k in ("start", "end")]
    points = [_position(end) for end in ends]
    if points[0] is None or points[1] is None:
        raise JsonRpcInvalidParams(f"{usage}: range needs start and end positions {{line, character}}")
    optional_strings = {key: arg.get(key, "") for key in ("instruction", "errorText")}
    diagnostics = arg.get("diagnostics", [])
    if any(not isinstance(v, str) for v in optional_strings.values()) or not (
        isinstance(diagnostics, list) and all(isinstance(d, str) for d in diagnostics)
    ):
        raise JsonRpcInvalidParams(f"{usage}: instruction and errorText are strings, diagnostics a list of strings")
    request_id = arg.get("id", uuid.uuid4().hex[:12])
    apply = arg.get("apply", True)
    if isinstance(request_id, bool) or not isinstance(request_id, (str, int)) or not isinstance(apply, bool):
        raise JsonRpcInvalidParams(f"{usage}: id is a string or number, apply true or false")
    return _AssistArgs(
        uri=uri,
        range=types.Range(points[0], points[1]),
        instruction=optional_strings["instruction"],
        error_text=optional_strings["errorText"],
        diagnostics=tuple(diagnostics),
        id=request_id,
        apply=apply,
    )


def _position(value: Any) -> types.Position | None:
    if not isinstance(value, Mapping):
        return None
    line, character = value.get("line"), value.get("character")
    if not (_natural(line) and _natural(character)):
        return None
    return types.Position(line, character)


def _natural(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


async def _assist(ls: TandemServer, task: str, args: Sequence[Any]) -> dict[str, Any]:
    """Run one explain / debug / refactor command: validate, stream, record, apply."""
    msg_id = ls.protocol.msg_id
    doc = ls.protocol.snapshots.pop(msg_id, None)
    cancel = ls.protocol.cancels.get(msg_id) or threading.Event()
    arg = _assist_args(task, args)
    if doc is None:
        raise JsonRpcInvalidParams(f"document is not open: {arg.uri}")
    request = _assist_request(task, arg, doc, ls.encoding)
    await ls.ready_engine()
    result = await _streamed(ls, request, arg, cancel)
    if result.reason:
        ls.report_once(result.reason, types.MessageType.Warning)
    for note in result.notes:
        ls.report_once(note, types.MessageType.Info)
    notes = list(result.notes)
    applied: bool | None = None
    if result.code is not None:
        applied = False
        if arg.apply and not cancel.is_set():
            why_not = await _apply_refactor(ls, doc, arg.range, result.code)
            applied = why_not is None
            if why_not is not None:
                notes.append(f"The edit was not applied: {why_not}.")
    return {
        "id": arg.id,
        "text": result.text,
        "code": result.code,
        "backend": result.backend,
        "model": result.model,
        "reason": result.reason,
        "outcome": result.outcome,
        "notes": notes,
        "applied": applied,
        "usage": {
            "promptTokens": result.usage.prompt_tokens,
            "completionTokens": result.usage.completion_tokens,
            "estimated": result.usage.estimated,
        },
    }


def _assist_request(task: str, arg: _AssistArgs, doc: Document, encoding: str) -> AssistRequest:
    """The domain request for `arg` on the document as the command saw it."""
    try:
        start, end = span_at(doc.text, _pair(arg.range.start), _pair(arg.range.end), encoding)
    except PositionError as exc:
        raise JsonRpcInvalidParams(f"the range is outside {arg.uri}: {exc}") from exc
    if end < start:
        raise JsonRpcInvalidParams(f"the range ends before it starts in {arg.uri}")
    return AssistRequest(
        task=task,
        path=to_fs_path(arg.uri) or arg.uri,
        language_id=doc.language_id,
        text=doc.text,
        start=start,
        end=end,
        instruction=arg.instruction or (DEFAULT_INSTRUCTION if task == "refactor" else ""),
        diagnostics=arg.diagnostics,
        error_text=arg.error_text,
    )


async def _streamed(
    ls: TandemServer, request: AssistRequest, arg: _AssistArgs, cancel: threading.Event
) -> AssistResult:
    """`run_assist`, its chunks sent as `tandem/assistChunk` and as cancellable work-done progress."""
    assert ls.router is not None
    running = asyncio.current_task()
    assert running is not None
    ls.assists.add(running)
    token: str | None = None
    streamed: list[str] = []

    def on_chunk(text: str) -> None:
        streamed.append(text)
        ls.protocol.notify(ASSIST_CHUNK, {"id": arg.id, "task": request.task, "uri": arg.uri, "text": text})
        if token is not None:
            line = "".join(streamed[-20:]).rstrip().rpartition("\n")[2][-80:]
            ls.work_done_progress.report(token, types.WorkDoneProgressReport(message=line or None))

    outcome = "failed"
    try:
        token = await _begin_progress(ls, f"tandem: {request.task.capitalize()}", cancel)
        result = await run_assist(request, ls.router, on_chunk, cancel)
        outcome = result.outcome
        return result
    finally:
        if token is not None:
            ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=outcome))
            ls.work_done_progress.tokens.pop(token, None)
        ls.assists.discard(running)


async def _begin_progress(ls: TandemServer, title: str, cancel: threading.Event) -> str | None:
    """A cancellable work-done progress, when the client shows them; its token."""
    window = ls.client_capabilities.window
    if window is None or not window.work_done_progress:
        return None
    token = f"tandem-{uuid.uuid4().hex}"
    try:
        await asyncio.wait_for(ls.work_done_progress.create_async(token), _PROGRESS_CREATE_TIMEOUT_S)
    except (JsonRpcException, asyncio.TimeoutError) as exc:  # the command runs without progress
        log.warning("window/workDoneProgress/create failed: %s", exc)
        return None
    # The client's cancel button cancels this future (pygls), which stops the stream.
    ls.work_done_progress.tokens[token].add_done_callback(lambda _: cancel.set())
    ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title, cancellable=True))
    return token


async def _apply_refactor(ls: TandemServer, doc: Document, rng: types.Range, code: str) -> str | None:
    """Replace the range by `code` through the editor (so its undo works); None, or why not."""
    current = ls.documents.get(doc.uri)
    if current is None:
        return "the document was closed"
    if current.version != doc.version:
        return "the document changed while the reply was written"
    workspace = ls.client_capabilities.workspace
    if workspace is None or not workspace.apply_edit:
        return "the editor does not take edits from the server (workspace/applyEdit)"
    edit = types.TextEdit(range=rng, new_text=code)
    if workspace.workspace_edit is not None and workspace.workspace_edit.document_changes:
        # Versioned: the editor refuses the edit if the text moved on after this answer was sent.
        versioned = types.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version)
        change = types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(versioned, [edit])])
    else:
        change = types.WorkspaceEdit(changes={doc.uri: [edit]})
    try:
        answer = await ls.workspace_apply_edit_async(
            types.ApplyWorkspaceEditParams(edit=change, label="tandem: Refactor")
        )
    except JsonRpcException as exc:
        return f"the editor answered workspace/applyEdit with an error: {exc}"
    if answer.applied:
        return None
    return f"the editor did not apply it ({answer.failure_reason or 'no reason given'})"


def _code_actions(
    doc: Document, rng: types.Range, context: types.CodeActionContext, encoding: str
) -> list[types.CodeAction]:
    """Explain and Refactor on a selection; Debug on diagnostics."""
    offered: list[tuple[str, str, types.CodeActionKind, dict[str, Any]]] = []
    selection = {"uri": doc.uri, "range": _range_json(rng)}
    if rng.start != rng.end:
        offered.append(("tandem: Explain", "tandem.explain", types.CodeActionKind.Refactor, selection))
        offered.append(("tandem: Refactor…", "tandem.refactor", types.CodeActionKind.RefactorRewrite, selection))
    if context.diagnostics:
        target = rng if rng.start != rng.end else _lines_of(doc.text, context.diagnostics, encoding) or rng
        debug = {
            "uri": doc.uri,
            "range": _range_json(target),
            "diagnostics": [_diagnostic_line(d) for d in context.diagnostics],
        }
        offered.append(("tandem: Debug", "tandem.debug", types.CodeActionKind.QuickFix, debug))
    only = context.only
    return [
        types.CodeAction(
            title=title,
            kind=kind,
            diagnostics=list(context.diagnostics) if command == "tandem.debug" else None,
            command=types.Command(title=title, command=command, arguments=[argument]),
        )
        for title, command, kind, argument in offered
        if not only or any(kind == want or kind.startswith(f"{want}.") for want in only)
    ]


def _range_json(rng: types.Range) -> dict[str, Any]:
    return {
        "start": {"line": rng.start.line, "character": rng.start.character},
        "end": {"line": rng.end.line, "character": rng.end.character},
    }


def _lines_of(text: str, diagnostics: Sequence[types.Diagnostic], encoding: str) -> types.Range | None:
    """The whole lines the diagnostics cover, or None when one lies outside the document."""
    first = min(d.range.start.line for d in diagnostics)
    last = max(d.range.end.line for d in diagnostics)
    try:
        start, end = offset_at(text, last, 0, encoding), offset_at(text, last, 2**31, encoding)
        offset_at(text, first, 0, encoding)
    except PositionError:
        return None
    return types.Range(types.Position(first, 0), types.Position(last, units(text[start:end], encoding)))


def _diagnostic_line(diagnostic: types.Diagnostic) -> str:
    """`line 12: error: name 'x' is not defined (pyflakes)`, as a prompt shows it."""
    severity = (diagnostic.severity or types.DiagnosticSeverity.Error).name.lower()
    source = f" ({diagnostic.source})" if diagnostic.source else ""
    return f"line {diagnostic.range.start.line + 1}: {severity}: {diagnostic.message}{source}"


def _selected(text: str, info: types.SelectedCompletionInfo | None, encoding: str) -> Selected | None:
    if info is None:
        return None
    start, end = span_at(text, _pair(info.range.start), _pair(info.range.end), encoding)
    return Selected(start, end, info.text)


def _pair(position: types.Position) -> tuple[int, int]:
    return position.line, position.character


def _model_status(backend: LocalSide | None) -> dict[str, Any]:
    if backend is None:
        return {"state": "not started"}
    if isinstance(backend, OpenAICompatBackend):
        state = "error" if not backend.healthy else "ready" if backend.model else "loading"
        return {"state": state, "endpoint": backend.base_url, "name": backend.model, "error": backend.last_error}
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
