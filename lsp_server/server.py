"""The LSP layer: the only module that speaks pygls and lsprotocol. Handlers convert, call the app, convert back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, BinaryIO

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.io_ import StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.protocol import JsonRPCNotification, LanguageServerProtocol, default_converter, lsp_method
from pygls.uris import to_fs_path

from lsp_server import __version__, transport
from lsp_server.acceptance import Change, replacement
from lsp_server.app import App, Level, Report
from lsp_server.assist import AssistRequest, AssistResult
from lsp_server.backends import BackendError
from lsp_server.commands import AssistArgs, BadArguments, Span, answer, assist_args, assist_request, code_actions
from lsp_server.completion.engine import Request, Selected, Timing
from lsp_server.config import Settings, flatten, resolve, saved_settings
from lsp_server.documents import Document, PositionError, span_at
from lsp_server.recent import RecentChunks, display_path

log = logging.getLogger(__name__)

GHOST_TEXT = "tandem/ghostText"
"""Notification: the ghost text so far while a suggestion streams."""
ASSIST_CHUNK = "tandem/assistChunk"
"""Notification: the next chunk of an explain / debug / refactor reply."""
PARTIALLY_ACCEPTED = "tandem.partiallyAccepted"
"""Command: [requestId, acceptedLength], the suggestion's first acceptedLength code units (the position
encoding's) are accepted, as the editor's accept-word or accept-line put them in the document."""
YANKED = "tandem.yanked"
"""Command: [uri, text], the user yanked or copied `text` from the document `uri` (the recent-edit ring keeps it)."""
ASSIST_COMMANDS = frozenset({"tandem.explain", "tandem.debug", "tandem.refactor"})
"""The commands that ask a model about a selection (pygls cannot cancel them; tandem does)."""
_IGNORED = "$/tandem/answeredMalformedRequest"
_PROGRESS_CREATE_TIMEOUT_S = 5.0
_COUNTDOWN = re.compile(r" \(in (?:\d+ h )?\d+ min\)")
_LEVELS = {"error": types.MessageType.Error, "warning": types.MessageType.Warning, "info": types.MessageType.Info}

AppFactory = Callable[[Settings, str, Report], App]
"""Builds the application from settings, the workspace folder and how to tell the user something."""


@dataclass
class _Pending:
    """What the LSP layer keeps about a request until its answer is written."""

    received: float
    """`time.perf_counter()` when it was read."""
    snapshot: Document | None
    """Its document as it was when the request was read: the handler starts after later messages are handled."""
    cancel: threading.Event | None = None
    """A command's cancel event (pygls cannot cancel commands)."""
    shown: Timing | None = None
    """The stage times of a suggestion shown, finished once the answer is written."""


class TandemProtocol(LanguageServerProtocol):
    """Keeps open documents in tandem's own store, where only '\\n' ends a line, as in LSP."""

    _server: TandemServer

    def __init__(self, server: TandemServer, converter: Any) -> None:
        super().__init__(server, converter)
        self.pending: dict[Any, _Pending] = {}
        """Inline-completion and assist requests until their answers are written, by request id."""
        self.exited = False

    def _handle_request(self, msg_id: Any, method_name: str, params: Any) -> None:
        # A request's handler task starts only after messages read with it are handled: a burst
        # of didChange would show the request a newer text than its position refers to.
        received = time.perf_counter()
        uri: Any = None
        cancel = None
        if method_name == types.TEXT_DOCUMENT_INLINE_COMPLETION:
            uri = getattr(getattr(params, "text_document", None), "uri", None)
        elif method_name == types.WORKSPACE_EXECUTE_COMMAND and getattr(params, "command", None) in ASSIST_COMMANDS:
            cancel = threading.Event()
            arguments = params.arguments or [None]
            uri = arguments[0].get("uri") if isinstance(arguments[0], Mapping) else None
        else:
            super()._handle_request(msg_id, method_name, params)
            return
        doc = self._server.documents.get(uri) if isinstance(uri, str) else None
        snapshot = None if doc is None else doc.snapshot()
        self.pending[msg_id] = _Pending(received, snapshot, cancel)
        super()._handle_request(msg_id, method_name, params)

    def _handle_cancel_notification(self, msg_id: Any) -> None:
        # pygls cannot cancel a command's task: stop its stream, and the command answers with
        # what it has (the LSP allows a result on cancel) once the ledger has recorded it.
        pending = self.pending.get(msg_id)
        if pending is not None and pending.cancel is not None:
            log.info("cancelling command request %s", msg_id)
            pending.cancel.set()
            return
        super()._handle_cancel_notification(msg_id)

    def _send_handler_result(self, future: Any, *, msg_id: Any) -> None:
        pending = self.pending.pop(msg_id, None)
        super()._send_handler_result(future, msg_id=msg_id)
        if pending is not None and pending.shown is not None and self._server.app is not None:
            pending.shown.server = (time.perf_counter() - pending.received) * 1000  # the answer is written by now
            self._server.app.last_timing = pending.shown

    async def serve(self, reader: transport.Reader, stop: threading.Event) -> None:
        """Handle each message the client sends, answering those that cannot be handled as JSON-RPC says, until
        the stream ends or `stop` is set (`exit` ends the process)."""
        async for item in transport.messages(reader):
            if isinstance(item, transport.Invalid):
                self._reject(item)
            else:
                self._receive(item)
            if stop.is_set():
                break

    def _reject(self, invalid: transport.Invalid) -> None:
        log.warning("%s", invalid.message)
        error = {"code": invalid.code, "message": invalid.message}
        for msg_id in (invalid.id, *invalid.batched):
            # written as is: pygls would leave out a null id, which JSON-RPC requires when the id is unknown
            self._send_data({"jsonrpc": self.VERSION, "id": msg_id, "error": error})
        if invalid.tell_user is not None:
            self._server.report_once(invalid.tell_user)

    def _receive(self, data: dict[str, Any]) -> None:
        try:
            message = self.structure_message(data)
        except JsonRpcException as exc:  # a notification: nobody to answer (a request was answered already)
            log.warning("malformed %s notification ignored: %s", data.get("method"), exc.__cause__)
            self._server.report_once(f"a malformed {data.get('method')} notification was ignored")
            return
        self.handle_message(message)

    def _send_response(self, msg_id: Any, result: Any | None = None, error: types.ResponseError | None = None) -> None:
        # pygls puts a handler's traceback in an internal error's data: it is for our log, not the client.
        if error is not None and isinstance(error.data, Mapping) and "traceback" in error.data:
            error = types.ResponseError(code=error.code, message=error.message)
        super()._send_response(msg_id, result, error)

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
        version = params.text_document.version
        if version <= doc.version:  # a stale or replayed change: versions only go up (LSP)
            log.warning("change to %s ignored: version %d after version %d", doc.uri, version, doc.version)
            self._server.report_once(f"changes to {doc.uri} whose version went back were ignored", "warning")
            return
        app = self._server.app
        track = app is not None and app.acceptance.tracking(doc.uri)
        tracked: list[Change] = []
        for change in params.content_changes:  # each costs its own size, not the document's
            try:
                if (edit := _apply(doc, change, self._server.encoding, track)) is not None:
                    tracked.append(edit)
                if isinstance(change, types.TextDocumentContentChangePartial):
                    first, last = change.range.start.line, change.range.end.line
                    self._server.recent.edited(doc.uri, first, last - first, change.text.count("\n"))
            except PositionError as exc:  # rejects only itself: the valid changes of the batch apply
                self._server.report_once(f"bad change to {doc.uri}: {exc}; that change was left out")
        doc.version = version
        if app is not None and tracked:
            app.acceptance.edited(doc.uri, tracked)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> None:
        doc = self._server.documents.pop(params.text_document.uri, None)
        if doc is not None:
            self._server.recent.closed(doc.uri, doc.text)
        if self._server.app is not None:
            self._server.app.forget(params.text_document.uri)


def gist_of(message: str) -> str:
    """What makes a message another one: not a countdown in it (`(in 3 h 7 min)` a minute later)."""
    return _COUNTDOWN.sub("", message)


class TandemServer(LanguageServer):
    """Open documents and the application that serves them."""

    protocol: TandemProtocol

    def __init__(self, make_app: AppFactory = App) -> None:
        super().__init__("tandem", __version__, protocol_cls=TandemProtocol, converter_factory=_converter)
        self.make_app = make_app
        self.app: App | None = None
        """Made once `initialized` has brought the settings."""
        self.documents: dict[str, Document] = {}
        self.recent = RecentChunks()
        """Chunks around the workspace's recent edits; kept from the first edit, before the app is made."""
        self.init_options: Mapping[str, Any] | None = None
        self.shutdown_requested = False
        self._reported: set[str] = set()
        self._ready = asyncio.Event()

    def start_io(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """Serve over stdio with tandem's reader (see `transport`) in place of pygls's."""
        self._stop_event = stop = threading.Event()
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        try:
            asyncio.run(self.protocol.serve(_Stdin(stdin or sys.stdin.buffer, self.thread_pool), stop))
        except BrokenPipeError:
            log.error("the connection to the client is lost; shutting down")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()  # type: ignore[no-untyped-call]

    def start_tcp(self, host: str, port: int) -> None:
        """Serve one client at a time over TCP with tandem's reader."""
        self._stop_event = stop = threading.Event()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.protocol.set_writer(writer)
            await self.protocol.serve(_Socket(reader), stop)
            self.shutdown()  # type: ignore[no-untyped-call]

        async def listen() -> None:
            self._server = server = await asyncio.start_server(connection, host, port, limit=transport.MAX_HEADER_LINE)
            log.info("serving on %s:%s", host, port)
            async with server:
                await server.serve_forever()  # until the connection ends (`shutdown` closes the server)

        with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            asyncio.run(listen())

    @property
    def encoding(self) -> str:
        """The negotiated position encoding: utf-8, utf-16 or utf-32."""
        encoding = self.server_capabilities.position_encoding or "utf-16"
        # str() of the enum is its name ("PositionEncodingKind.Utf16"), not the wire value.
        return encoding.value if isinstance(encoding, types.PositionEncodingKind) else encoding

    def report_once(self, message: str, level: Level = "error") -> None:
        """Show a problem to the user once per distinct message, and log it."""
        log.log({"error": logging.ERROR, "warning": logging.WARNING}.get(level, logging.INFO), "%s", message)
        if (gist := gist_of(message)) in self._reported:
            return
        self._reported.add(gist)
        self.window_show_message(types.ShowMessageParams(type=_LEVELS[level], message=f"tandem: {message}"))

    def open_app(self, settings: Settings) -> None:
        """Make the application; requests waiting for it go on."""
        self.app = self.make_app(settings, _workspace_root(self), self.report_once)
        self.recent.most = settings.recent_chunks
        self._ready.set()

    async def ready_app(self) -> App:
        """The application, once `initialized` has made it."""
        await self._ready.wait()
        assert self.app is not None
        return self.app

    def pending_request(self) -> _Pending:
        """What was kept about the inline-completion or assist request being handled."""
        return self.protocol.pending[self.protocol.msg_id]

    async def resolve_settings(self, pushed: Mapping[str, Any] | None = None) -> Settings:
        """The settings the client sent last (initializationOptions, or the object a didChangeConfiguration
        pushed: a setting the user removed is gone), overridden key by key by its `tandem` configuration, resolved."""
        if pushed is not None:
            self.init_options = pushed
        options = flatten(self.init_options or {})
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
                    options.update(flatten(pulled[0]))
        settings, problems = resolve(options or None, saved=saved_settings())
        for problem in problems:
            self.report_once(problem, "warning")
        return settings


def create_server(make_app: AppFactory = App) -> TandemServer:
    """A server with every handler registered; `make_app` builds the application behind them."""
    server = TandemServer(make_app)

    @server.feature(types.INITIALIZE)
    def initialize(ls: TandemServer, params: types.InitializeParams) -> None:
        options = params.initialization_options
        ls.init_options = options if isinstance(options, Mapping) else None

    @server.feature(types.INITIALIZED)
    async def initialized(ls: TandemServer, params: types.InitializedParams) -> None:
        ls.open_app(await ls.resolve_settings())

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: TandemServer, params: types.DidChangeConfigurationParams) -> None:
        app = await ls.ready_app()
        pushed = params.settings.get("tandem") if isinstance(params.settings, Mapping) else None
        settings = await ls.resolve_settings(pushed if isinstance(pushed, Mapping) else None)
        if settings != app.settings:
            await app.reconfigure(settings)
            ls.recent.most = settings.recent_chunks

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: TandemServer, params: None) -> None:
        ls.shutdown_requested = True
        if ls.app is not None:
            await ls.app.aclose()

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: TandemServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
        uri, pos = params.text_document.uri, params.position
        pending = ls.pending_request()
        doc = pending.snapshot
        if doc is None:
            raise JsonRpcInvalidParams(f"document is not open: {uri}")
        try:
            cursor = doc.offset_at(pos.line, pos.character, ls.encoding)
            selected = _selected(doc.text, params.context.selected_completion_info, ls.encoding)
        except PositionError as exc:
            raise JsonRpcInvalidParams(f"{exc} in {uri}") from exc
        app = await ls.ready_app()  # the snapshot was taken before: the request is about the text as it was
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        request = _completion_request(ls, doc, cursor, selected=selected, invoked=invoked)
        position = {"line": pos.line, "character": pos.character}

        def partial(text: str) -> None:
            ls.protocol.notify(GHOST_TEXT, {"uri": uri, "version": doc.version, "position": position, "text": text})

        timing = Timing()
        try:
            suggestion = await app.complete(request, to_fs_path(uri) or uri, partial, timing)
        except BackendError as exc:
            ls.report_once(str(exc))
            return types.InlineCompletionList(items=[])
        if suggestion is None:
            return types.InlineCompletionList(items=[])
        pending.shown = timing
        current = ls.documents.get(uri)
        if current is not None and current.version == doc.version:  # else the editor drops it: not shown
            app.shown(suggestion, uri, doc.language_id)
        info = params.context.selected_completion_info
        accepted = types.Command(title="Accepted", command="tandem.accepted", arguments=[suggestion.request_id])
        replace = info.range if info is not None else types.Range(pos, pos)
        item = types.InlineCompletionItem(insert_text=suggestion.text, range=replace, command=accepted)
        return types.InlineCompletionList(items=[item])

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE, types.SaveOptions(include_text=False))
    def did_save(ls: TandemServer, params: types.DidSaveTextDocumentParams) -> None:
        doc = ls.documents.get(params.text_document.uri)
        if doc is not None:
            ls.recent.saved(doc.uri, doc.text)

    kinds = [types.CodeActionKind.Refactor, types.CodeActionKind.RefactorRewrite, types.CodeActionKind.QuickFix]

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(code_action_kinds=kinds))
    def code_action(ls: TandemServer, params: types.CodeActionParams) -> list[types.CodeAction | types.Command] | None:
        doc = ls.documents.get(params.text_document.uri)
        if doc is None:
            return None
        context = params.context
        diagnostics = [(_span(d.range), _diagnostic_line(d)) for d in context.diagnostics]
        only = [k.value if isinstance(k, types.CodeActionKind) else k for k in context.only or []]
        actions = [
            types.CodeAction(
                title=offer.title,
                kind=types.CodeActionKind(offer.kind),
                diagnostics=list(context.diagnostics) if offer.command == "tandem.debug" else None,
                command=types.Command(title=offer.title, command=offer.command, arguments=[offer.argument]),
            )
            for offer in code_actions(doc, _span(params.range), diagnostics, only, ls.encoding)
        ]
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
        return {**(await ls.ready_app()).status(), "recent": ls.recent.status()}

    @server.command("tandem.usage")
    async def usage(ls: TandemServer, *args: Any) -> dict[str, Any]:
        return await (await ls.ready_app()).usage()

    @server.command("tandem.accepted")
    async def accepted(ls: TandemServer, *args: Any) -> None:
        app = await ls.ready_app()
        if args and isinstance(args[0], str):
            follow = app.accepted(args[0], _text_of(ls))
            doc = None if follow is None else ls.documents.get(follow[0])
            if follow is not None and doc is not None:
                app.prefetch(_completion_request(ls, doc, follow[1]), to_fs_path(doc.uri) or doc.uri)

    @server.command(PARTIALLY_ACCEPTED)
    async def partially_accepted(ls: TandemServer, *args: Any) -> None:
        if len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], int) or args[1] < 0:
            raise JsonRpcInvalidParams(f"{PARTIALLY_ACCEPTED} takes [requestId, acceptedLength], not {list(args)}")
        app = await ls.ready_app()
        app.accepted(args[0], _text_of(ls), args[1], ls.encoding)

    @server.command(YANKED)
    def yanked(ls: TandemServer, *args: Any) -> None:
        if len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], str):
            raise JsonRpcInvalidParams(f"{YANKED} takes [uri, text], two strings")  # not echoed: it may be a secret
        ls.recent.yanked(*args)

    return server


async def _assist(ls: TandemServer, task: str, args: Sequence[Any]) -> dict[str, Any]:
    """Run one explain / debug / refactor command: validate, stream, record, apply."""
    pending = ls.pending_request()
    cancel = pending.cancel or threading.Event()
    doc = pending.snapshot
    try:
        arg = assist_args(task, args)
        if doc is None:
            raise BadArguments(f"document is not open: {arg.uri}")
        request = assist_request(task, arg, doc, to_fs_path(arg.uri) or arg.uri, ls.encoding)
    except BadArguments as exc:
        raise JsonRpcInvalidParams(str(exc)) from exc
    app = await ls.ready_app()
    result = await _streamed(ls, app, request, arg, cancel)
    if result.reason:
        ls.report_once(result.reason, "warning")
    for note in result.notes:
        ls.report_once(note, "info")
    if result.code is None or not arg.apply or cancel.is_set():
        return answer(arg, result, applied=None if result.code is None else False)
    why_not = await _apply_refactor(ls, doc, arg.span, result.code)
    return answer(arg, result, applied=why_not is None, why_not=why_not)


async def _streamed(
    ls: TandemServer, app: App, request: AssistRequest, arg: AssistArgs, cancel: threading.Event
) -> AssistResult:
    """The app's answer, its chunks sent as `tandem/assistChunk` and as cancellable work-done progress; a notice
    (why it runs on the local model) shown and sent before them, as a chunk with no text and a `notice`."""
    token: str | None = None
    streamed: list[str] = []
    chunk = {"id": arg.id, "task": request.task, "uri": arg.uri}

    def on_chunk(text: str) -> None:
        streamed.append(text)
        ls.protocol.notify(ASSIST_CHUNK, {**chunk, "text": text})
        if token is not None:
            line = "".join(streamed[-20:]).rstrip().rpartition("\n")[2][-80:]
            ls.work_done_progress.report(token, types.WorkDoneProgressReport(message=line or None))

    def on_notice(notice: str) -> None:
        ls.report_once(notice, "warning")
        ls.protocol.notify(ASSIST_CHUNK, {**chunk, "text": "", "notice": notice})

    outcome = "failed"
    try:
        token = await _begin_progress(ls, f"tandem: {request.task.capitalize()}", cancel)
        result = await app.assist(request, on_chunk, cancel, on_notice)
        outcome = result.outcome
        return result
    finally:
        if token is not None:
            ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=outcome))
            ls.work_done_progress.tokens.pop(token, None)


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


async def _apply_refactor(ls: TandemServer, doc: Document, span: Span, code: str) -> str | None:
    """Replace the span by `code` through the editor (so its undo works); None, or why not."""
    current = ls.documents.get(doc.uri)
    if current is None:
        return "the document was closed"
    if current.version != doc.version:
        return "the document changed while the reply was written"
    workspace = ls.client_capabilities.workspace
    if workspace is None or not workspace.apply_edit:
        return "the editor does not take edits from the server (workspace/applyEdit)"
    edit = types.TextEdit(range=types.Range(types.Position(*span[0]), types.Position(*span[1])), new_text=code)
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


def _converter() -> Any:
    """pygls's converter, except that a string takes only a string: cattrs makes 42 into "42", so a didChange whose
    text was a number replaced the document with its digits."""
    converter = default_converter()  # type: ignore[no-untyped-call]

    def string(value: Any, _: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, not {type(value).__name__}")
        return value

    converter.register_structure_hook(str, string)
    return converter


class _Stdin:
    """stdin as a `transport.Reader`: read in a thread, so the event loop never blocks on it."""

    def __init__(self, stdin: BinaryIO, pool: Executor) -> None:
        self._stdin = stdin
        self._pool = pool

    async def readline(self) -> bytes:
        limit = transport.MAX_HEADER_LINE
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._stdin.readline, limit)

    async def read(self, n: int) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._stdin.read, n)


class _Socket:
    """A TCP connection as a `transport.Reader`."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    async def readline(self) -> bytes:
        try:
            return await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:  # the end of the stream
            return exc.partial
        except asyncio.LimitOverrunError:  # a line over the limit, left in the buffer: handed on a piece at a time
            return await self._reader.read(transport.MAX_HEADER_LINE)

    async def read(self, n: int) -> bytes:
        return await self._reader.read(n)


def _other_documents(server: TandemServer, doc: Document, most: int = 8) -> tuple[tuple[str, str], ...]:
    """The other open documents in `doc`'s language, most recently opened first, for prompt context."""
    others = [(d.uri, d.text) for d in server.documents.values() if d.language_id == doc.language_id]
    others = [(uri, text) for uri, text in others if uri != doc.uri]
    return tuple(reversed(others[-most:]))


def _completion_request(
    ls: TandemServer, doc: Document, cursor: int, selected: Selected | None = None, invoked: bool = False
) -> Request:
    """The engine's request at `cursor` in `doc`, with the workspace's context: the other open documents and the
    recent edits (read once the settings have sized the ring)."""
    root = _workspace_root(ls)
    others = _other_documents(ls, doc)
    chunks = ls.recent.context(doc.uri, doc.text, cursor, dict(others))
    return Request(
        uri=doc.uri,
        text=doc.text,
        cursor=cursor,
        selected=selected,
        invoked=invoked,
        workspace=root,
        others=others,
        recent=tuple((display_path(chunk.uri, root), chunk) for chunk in chunks),
        path=display_path(doc.uri, root),
    )


def _apply(doc: Document, change: types.TextDocumentContentChangeEvent, encoding: str, track: bool) -> Change | None:
    """Apply one content change to `doc`; when `track`, the change as offsets into the text it changed."""
    if isinstance(change, types.TextDocumentContentChangePartial):
        start, end = _span(change.range)
        offsets = (doc.offset_at(*start, encoding), doc.offset_at(*end, encoding)) if track else None
        doc.apply_change(change.text, start, end, encoding)
        return None if offsets is None else (*offsets, change.text)
    old = doc.text if track else ""
    doc.text = change.text
    return replacement(old, doc.text) if track else None


def _text_of(server: TandemServer) -> Callable[[str], str | None]:
    """The text of an open document, by uri."""

    def text_of(uri: str) -> str | None:
        doc = server.documents.get(uri)
        return None if doc is None else doc.text

    return text_of


def _workspace_root(server: TandemServer) -> str:
    try:
        root = server.workspace.root_uri
    except RuntimeError:
        return ""
    return to_fs_path(root) or "" if root else ""


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


def _span(rng: types.Range) -> Span:
    return _pair(rng.start), _pair(rng.end)


def _pair(position: types.Position) -> tuple[int, int]:
    return position.line, position.character
