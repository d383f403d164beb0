"""End to end: explain / debug / refactor through the real server, the real openai SDK and a real
OpenAI-compatible server on loopback (llama.cpp with the embedded model), faults injected at HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from lsp_server.assist import LOCAL_MAX_TOKENS
from lsp_server.tools.session import plain
from tests.conftest import REPO, Client, command, start_client, until
from tests.e2e.test_completion import inline_params, ledger_rows, units
from tests.loopback import Fault, FaultProxy, Script, ScriptedServer, free_port

KEY = "sk-test-7c2e9a41b5d84f06a3e1c9b7d2f5a8e4"
URI = (REPO / "tandem_sample.py").as_uri()
SOURCE = '''import os


def greet(name):
    """Grüße 😀 to name."""
    return f"Hello, {name}!"


def file_size(path):
    return os.path.getsize(path)


def average(values):
    return sum(values) / len(values)
'''
TINY_URI = (REPO / "tandem_tiny.py").as_uri()
TINY = "def add(a, b):\n    return "
"""Open in every session: completions are asked for here while a command runs (quick on 2 cores)."""
# A small context keeps the embedded model's answers short when a command falls back to it.
FAST_LOCAL = {"local": {"contextSize": 256}, "completion": {"maxTokens": 8}}


@pytest.fixture(scope="module")
def module_proxy(upstream: str) -> Iterator[FaultProxy]:
    """The cloud: replies capped at 16 tokens, quick on 2 cores."""
    proxy = FaultProxy(upstream, max_tokens=16)
    yield proxy
    proxy.close()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    """A cloud that answers with known replies."""
    server = ScriptedServer()
    yield server
    server.close()


@dataclass
class Editor:
    """A started server and what the client received from it."""

    client: Client
    data_dir: Path
    chunks: list[dict[str, Any]] = field(default_factory=list)
    edits: list[types.ApplyWorkspaceEditParams] = field(default_factory=list)

    def text_of(self, request_id: str) -> str:
        return "".join(c["text"] for c in self.chunks if c["id"] == request_id)

    def shown(self) -> list[str]:
        return [m.message for m in self.client.messages]


@pytest.fixture
async def start(tmp_path: Path) -> Any:
    """Start `tandem serve` as `editor` with `options` and `env`; stopped after the test."""
    started: list[Editor] = []

    async def run(
        editor: str = "visual-studio-code", options: dict[str, Any] | None = None, env: dict[str, str] | None = None
    ) -> Editor:
        client = await start_client(tmp_path, editor, options, env)
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(types.TextDocumentItem(TINY_URI, "python", version=1, text=TINY))
        )
        session = Editor(client, tmp_path)
        started.append(session)
        client.feature("tandem/assistChunk")(lambda params: session.chunks.append(plain(params)))

        def apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
            session.edits.append(params)
            return types.ApplyWorkspaceEditResult(applied=True)

        client.feature(types.WORKSPACE_APPLY_EDIT)(apply_edit)
        return session

    yield run
    for session in started:
        await session.client.shutdown_session()
        await session.client.stop()


def cloud_env(url: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": url}


def open_doc(client: Client, text: str = SOURCE, uri: str = URI, language: str = "python") -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text))
    )


def span(start: tuple[int, int], end: tuple[int, int]) -> dict[str, Any]:
    return {"start": {"line": start[0], "character": start[1]}, "end": {"line": end[0], "character": end[1]}}


FILE_SIZE = span((8, 0), (10, 0))
"""The `file_size` function, with its final newline."""


def send_command(client: Client, name: str, argument: dict[str, Any], msg_id: str) -> asyncio.Future[Any]:
    """Send without waiting, under a known request id."""
    params = types.ExecuteCommandParams(command=name, arguments=[argument])
    return asyncio.wrap_future(client.protocol.send_request(types.WORKSPACE_EXECUTE_COMMAND, params, msg_id=msg_id))


async def until_first_chunk_then_cancel(session: Editor, argument: dict[str, Any], msg_id: str) -> dict[str, Any]:
    """Explain on the local model only until it has said something: it is slow on 2 cores."""
    pending = send_command(session.client, "tandem.explain", {**argument, "id": msg_id}, msg_id)
    await until(lambda: session.text_of(msg_id) or pending.done())
    session.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
    return dict(plain(await asyncio.wait_for(pending, 30)))


async def complete_tiny(client: Client) -> list[types.InlineCompletionItem]:
    """An inline completion at the end of TINY."""
    position = types.Position(1, len("    return "))
    result = await client.text_document_inline_completion_async(inline_params(position, invoked=True, uri=TINY_URI))
    assert isinstance(result, types.InlineCompletionList), result
    return list(result.items)


async def code_actions(client: Client, params: types.CodeActionParams) -> list[types.CodeAction]:
    """textDocument/codeAction, read from the JSON: lsprotocol's client side would take every code
    action that carries a command for a bare Command (its union hook looks for a "command" key)."""
    raw: dict[Any, Any] = {}
    structure = client.protocol.structure_message

    def capture(data: dict[str, Any]) -> Any:
        if "jsonrpc" in data and "result" in data:
            raw[data["id"]] = data["result"]
        return structure(data)

    client.protocol.structure_message = capture  # type: ignore[method-assign]
    try:
        msg_id = f"code-actions-{uuid.uuid4().hex}"
        await asyncio.wrap_future(client.protocol.send_request(types.TEXT_DOCUMENT_CODE_ACTION, params, msg_id=msg_id))
    finally:
        del client.protocol.structure_message
    return [client.protocol._converter.structure(action, types.CodeAction) for action in raw[msg_id] or []]


async def spent(editor: Editor) -> list[dict[str, Any]]:
    """The ledger's rows once everything recorded so far is written."""
    await command(editor.client, "tandem.usage")
    return ledger_rows(editor.data_dir)


def audit_lines(editor: Editor) -> list[dict[str, Any]]:
    path = editor.data_dir / "cloud-audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_explain_streams_chunks_and_progress_and_records_the_cost(
    start: Any, proxy: FaultProxy, editor: str
) -> None:
    session = await start(editor, env=cloud_env(proxy.url))
    client = session.client
    open_doc(client)
    # From after the emoji to the end of the next line: utf-8 and utf-16 positions differ here.
    line4, line5 = SOURCE.split("\n")[4:6]
    begin = line4.index(" to name")
    selection = line4[begin:] + "\n" + line5
    argument = {"uri": URI, "range": span((4, units(line4[:begin], editor)), (5, units(line5, editor))), "id": "e1"}

    result = await command(client, "tandem.explain", argument)

    assert (result["backend"], result["model"], result["outcome"], result["reason"]) == ("cloud", "gpt-4o", "ok", None)
    assert result["id"] == "e1" and result["code"] is None and result["text"].strip()
    assert session.text_of("e1") == result["text"]
    assert all(c["task"] == "explain" and c["uri"] == URI for c in session.chunks)
    [reports] = client.progress_reports.values()
    begin_report, *middle, end_report = reports
    assert isinstance(begin_report, types.WorkDoneProgressBegin) and begin_report.cancellable
    assert begin_report.title == "tandem: Explain"
    assert middle and all(isinstance(r, types.WorkDoneProgressReport) for r in middle)
    assert isinstance(end_report, types.WorkDoneProgressEnd) and end_report.message == "ok"

    [request] = proxy.state.seen
    assert request.authorization == f"Bearer {KEY}" and request.body["model"] == "gpt-4o"
    prompt = request.body["messages"][1]["content"]
    assert f"```python\n{selection}\n```" in prompt  # the range converted in the editor's encoding
    assert proxy.state.usage is not None
    [row] = await spent(session)
    assert (row["task"], row["backend"], row["model"], row["outcome"]) == ("explain", "cloud", "gpt-4o", "ok")
    assert row["prompt_tokens"] == proxy.state.usage["prompt_tokens"] == result["usage"]["promptTokens"]
    assert row["completion_tokens"] == proxy.state.usage["completion_tokens"] > 0
    assert not row["estimated"] and row["cost_usd"] > 0
    [audit] = audit_lines(session)
    assert audit["model"] == "gpt-4o" and audit["uri"].endswith("tandem_sample.py")
    assert audit["promptTokens"] == row["prompt_tokens"] and audit["redacted"] == []
    status = await command(client, "tandem.status")
    cloud = plain(status["backends"])["cloud"]
    assert cloud == {"configured": True, "healthy": True, "lastError": None, "model": "gpt-4o"}
    assert session.shown() == []


async def test_completion_is_answered_while_the_cloud_stalls_and_cancel_request_stops_it(
    start: Any, proxy: FaultProxy
) -> None:
    session = await start(options=FAST_LOCAL, env=cloud_env(proxy.url))
    client = session.client
    open_doc(client)
    proxy.reset(Fault("stall", after_events=3))  # a few chunks, then silence
    pending = send_command(client, "tandem.explain", {"uri": URI, "range": FILE_SIZE, "id": "slow"}, "explain-1")
    await until(lambda: session.chunks)

    items = await complete_tiny(client)  # the local model answers while the cloud call hangs
    assert isinstance(items, list) and not pending.done()
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="explain-1"))
    result = plain(await asyncio.wait_for(pending, 30))

    assert result["outcome"] == "cancelled" and result["backend"] == "cloud"
    assert result["text"] == session.text_of("slow") != ""
    [reports] = client.progress_reports.values()
    assert reports[-1].message == "cancelled"
    rows = await spent(session)
    [cloud] = [r for r in rows if r["task"] == "explain"]
    assert cloud["outcome"] == "cancelled" and cloud["estimated"] and cloud["completion_tokens"] > 0
    assert [r["task"] for r in rows if r["backend"] == "local"] == ["completion"]


async def test_progress_cancel_closes_the_cloud_stream(start: Any, proxy: FaultProxy) -> None:
    session = await start(env=cloud_env(proxy.url))
    client = session.client
    open_doc(client)
    proxy.reset(Fault("slow", delay_s=0.3))
    pending = asyncio.ensure_future(command(client, "tandem.explain", {"uri": URI, "range": FILE_SIZE}))
    await until(lambda: session.chunks)
    [token] = client.progress_reports
    client.protocol.notify(types.WINDOW_WORK_DONE_PROGRESS_CANCEL, types.WorkDoneProgressCancelParams(token=token))
    result = await asyncio.wait_for(pending, 30)

    assert result["outcome"] == "cancelled" and result["text"]
    assert proxy.state.client_gone.wait(5)  # the HTTP stream was closed, not left to run
    assert proxy.state.events_sent < 10
    [row] = await spent(session)
    assert row["outcome"] == "cancelled"


async def test_code_actions_run_debug_and_refactor(start: Any, scripted: ScriptedServer) -> None:
    session = await start(env=cloud_env(scripted.url))
    client = session.client
    open_doc(client)
    line = SOURCE.split("\n")[13]
    bug = types.Diagnostic(
        range=types.Range(types.Position(13, 11), types.Position(13, 36)),
        message="possible division by zero",
        severity=types.DiagnosticSeverity.Warning,
        source="pylint",
    )

    async def actions(rng: types.Range, diagnostics: list[types.Diagnostic], only: list[str] | None = None) -> Any:
        context = types.CodeActionContext(diagnostics=diagnostics, only=only)
        return await code_actions(client, types.CodeActionParams(types.TextDocumentIdentifier(URI), rng, context))

    selection = types.Range(types.Position(8, 0), types.Position(10, 0))
    offered = await actions(selection, [])
    assert [(a.title, a.kind, a.command.command) for a in offered] == [
        ("tandem: Explain", types.CodeActionKind.Refactor, "tandem.explain"),
        ("tandem: Refactor…", types.CodeActionKind.RefactorRewrite, "tandem.refactor"),
    ]
    assert plain(offered[1].command.arguments[0]) == {"uri": URI, "range": FILE_SIZE}
    cursor = types.Range(types.Position(13, 20), types.Position(13, 20))
    assert await actions(cursor, []) == []
    [debug] = await actions(cursor, [bug], only=[types.CodeActionKind.QuickFix])
    assert debug.kind == types.CodeActionKind.QuickFix and list(debug.diagnostics) == [bug]
    argument = plain(debug.command.arguments[0])
    assert argument == {
        "uri": URI,
        "range": span((13, 0), (13, len(line))),
        "diagnostics": ["line 14: warning: possible division by zero (pylint)"],
    }

    scripted.scripts.append(Script("`values` may be empty: guard it."))
    trace = "Traceback (most recent call last):\nZeroDivisionError: division by zero"
    result = await command(client, debug.command.command, {**argument, "errorText": trace})
    assert result["text"] == "`values` may be empty: guard it." and result["backend"] == "cloud"
    prompt = scripted.seen[0].body["messages"][1]["content"]
    assert "Diagnostics:\n- line 14: warning: possible division by zero (pylint)" in prompt
    assert "ZeroDivisionError: division by zero" in prompt and line in prompt

    new_code = "def file_size(path):\n    return os.stat(path).st_size\n"
    scripted.scripts.append(Script(f"```python\n{new_code}```"))
    refactor = offered[1].command
    result = await command(client, refactor.command, *refactor.arguments)
    assert result["code"] == new_code and result["applied"] is True and result["outcome"] == "ok"
    assert "Instruction: Make this code clearer and simpler" in scripted.seen[1].body["messages"][1]["content"]
    [applied] = session.edits
    [change] = applied.edit.document_changes
    assert change.text_document.uri == URI and change.text_document.version == 1  # versioned: safe to undo
    assert list(change.edits) == [types.TextEdit(range=selection, new_text=new_code)]


async def test_refactor_is_not_applied_when_it_should_not_be(start: Any, scripted: ScriptedServer) -> None:
    session = await start(env=cloud_env(scripted.url))
    client = session.client
    open_doc(client)
    code = "def file_size(path):\n    return os.stat(path).st_size\n"
    reply = f"```python\n{code}```"

    scripted.scripts.append(Script(reply))
    argument = {"uri": URI, "range": FILE_SIZE, "instruction": "use os.stat", "apply": False}
    result = await command(client, "tandem.refactor", argument)
    assert result["code"] == code and result["applied"] is False and not session.edits  # the client applies it
    assert "Instruction: use os.stat" in scripted.seen[0].body["messages"][1]["content"]

    scripted.scripts.append(Script(reply, delay_s=0.1))
    pending = asyncio.ensure_future(command(client, "tandem.refactor", {"uri": URI, "range": FILE_SIZE, "id": "r"}))
    await until(lambda: session.text_of("r"))
    at = types.Position(0, 0)
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=2),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(at, at), text="# edited\n")],
        )
    )
    result = await pending
    assert result["code"] == code and result["applied"] is False and not session.edits
    assert "The edit was not applied: the document changed while the reply was written." in result["notes"]

    scripted.scripts.append(Script("I would call os.stat instead."))
    result = await command(client, "tandem.refactor", {"uri": URI, "range": span((9, 0), (11, 0))})
    assert result["outcome"] == "error" and result["code"] is None and result["applied"] is None
    assert "no code block; nothing was changed" in result["text"] and not session.edits
    rows = await spent(session)
    assert [(r["backend"], r["outcome"]) for r in rows] == [("cloud", "ok")] * 3  # every reply was paid for


async def test_bad_arguments_are_lsp_errors(start: Any) -> None:
    session = await start(env={"OPENAI_API_KEY": ""})
    client = session.client
    open_doc(client)
    cases = [
        ({"uri": "file:///nowhere.py", "range": FILE_SIZE}, "document is not open: file:///nowhere.py"),
        ({"uri": URI, "range": span((8, 0), (40, 0))}, "the range is outside .*line 40 is past the end"),
        ({"uri": URI, "range": span((10, 0), (8, 0))}, "the range ends before it starts"),
        ({"uri": URI}, "range needs start and end positions"),
        ({"uri": URI, "range": span((-1, 0), (1, 0))}, "range needs start and end positions"),
        ({"uri": URI, "range": FILE_SIZE, "diagnostics": "x"}, "diagnostics a list of strings"),
        ("file_size", "takes one argument"),
    ]
    for argument, expected in cases:
        with pytest.raises(Exception, match=expected) as info:
            await command(client, "tandem.explain", argument)
        assert getattr(info.value, "code", None) == -32602  # InvalidParams
    assert await spent(session) == []  # nothing ran
    assert await complete_tiny(client) is not None


async def test_without_a_key_commands_run_locally_and_say_why(start: Any) -> None:
    session = await start(options=FAST_LOCAL, env={"OPENAI_API_KEY": ""})
    client = session.client
    open_doc(client)
    result = await command(client, "tandem.explain", {"uri": URI, "range": FILE_SIZE})
    reason = "No cloud API key is set (OPENAI_API_KEY). Explain runs on the local model."
    assert (result["backend"], result["reason"], result["outcome"]) == ("local", reason, "ok")
    assert session.shown() == [f"tandem: {reason}"]
    status = await command(client, "tandem.status")
    assert plain(status["backends"])["cloud"]["configured"] is False
    [row] = await spent(session)
    assert (row["task"], row["backend"], row["outcome"]) == ("explain", "local", "ok")
    assert row["completion_tokens"] > 0 and audit_lines(session) == []


INVENTORY = """def total_price(items):
    total = 0
    for item in items:
        total += item.price * item.quantity
    return total


def restock(items, threshold):
    return [item for item in items if item.quantity < threshold]
"""
ECHOES = (
    "def total_price(items):",
    "total += item.price * item.quantity",
    "Explain what this code does",
    "You explain code",
    "senior engineer",
    "File: ",
    "<start_of_turn>",
    "<end_of_turn>",
)
"""The prompt's code and instructions, old and new: an answer that repeats them is an echo, not an answer."""


async def test_the_embedded_model_explains_a_function_and_the_notice_comes_first(start: Any) -> None:
    session = await start(env={"OPENAI_API_KEY": ""})
    uri = (REPO / "inventory.py").as_uri()
    open_doc(session.client, INVENTORY, uri)
    # The five lines of `total_price` as VS Code selects them: to column 0 of the sixth.
    argument = {"uri": uri, "range": span((0, 0), (5, 0)), "id": "inv"}

    result = await command(session.client, "tandem.explain", argument)

    reason = "No cloud API key is set (OPENAI_API_KEY). Explain runs on the local model."
    assert (result["backend"], result["reason"], result["outcome"]) == ("local", reason, "ok")
    notice, *chunks = [c for c in session.chunks if c["id"] == "inv"]
    assert (notice["notice"], notice["text"]) == (reason, "")
    assert chunks and not any("notice" in c for c in chunks)
    text = result["text"]
    assert "".join(c["text"] for c in chunks) == text
    words = set(re.findall(r"[a-z]+", text.lower()))
    # What the function does, in the answer's own words.
    assert words & {"total", "sum", "sums", "adds", "calculates", "computes"}, text
    assert words & {"price", "prices", "cost", "costs"}, text
    assert not [echo for echo in ECHOES if echo in text], text
    assert 0 < result["usage"]["completionTokens"] <= LOCAL_MAX_TOKENS["explain"]


async def test_a_denied_file_never_reaches_the_cloud(start: Any, proxy: FaultProxy) -> None:
    session = await start(options=FAST_LOCAL, env=cloud_env(proxy.url))
    client = session.client
    uri = (REPO / "deploy" / ".env.production").as_uri()
    text = "DATABASE_URL=postgres://app:s3cret@db/app\nDEBUG=0\n"
    open_doc(client, text, uri, "dotenv")
    result = await until_first_chunk_then_cancel(session, {"uri": uri, "range": span((0, 0), (2, 0))}, "env")
    assert result["backend"] == "local" and result["text"] == session.text_of("env") != ""
    assert "matches the cloud deny pattern '.env*' (privacy.cloudDeny)" in result["reason"]
    assert proxy.state.seen == [] and audit_lines(session) == []
    assert any(".env*" in m for m in session.shown())


@pytest.mark.parametrize("over_budget", ["local", "refuse"])
async def test_over_budget(start: Any, proxy: FaultProxy, over_budget: str) -> None:
    options = {**FAST_LOCAL, "cloud": {"dailyBudgetUsd": 0.000001, "overBudget": over_budget}}
    session = await start(options=options, env=cloud_env(proxy.url))
    client = session.client
    open_doc(client)
    argument = {"uri": URI, "range": FILE_SIZE}
    result = await until_first_chunk_then_cancel(session, argument, "budget")
    assert result["reason"].startswith("Cloud budget reached: $0.00 of $0.0000 spent today")
    assert proxy.state.seen == []
    rows = await spent(session)
    if over_budget == "local":
        assert result["backend"] == "local" and result["text"]
        assert [(r["backend"], r["outcome"]) for r in rows] == [("local", "cancelled")]
    else:
        assert (result["backend"], result["outcome"], result["text"]) == ("none", "over_budget", result["reason"])
        await command(client, "tandem.explain", argument)
        assert [(r["backend"], r["outcome"], r["prompt_tokens"]) for r in await spent(session)] == [
            ("cloud", "over_budget", 0)
        ] * 2
    assert len([m for m in session.shown() if "Cloud budget reached" in m]) == 1  # said once


@pytest.mark.parametrize(
    ("fault", "expected", "estimated"),
    [
        pytest.param(Fault("401"), "rejected the API key (401): check OPENAI_API_KEY", False, id="bad-key"),
        pytest.param(Fault("404"), "cloud model 'gpt-4o' not found", False, id="unknown-model"),
        pytest.param(Fault("malformed"), "malformed response", True, id="malformed-body"),
        pytest.param(Fault("empty"), "empty response from", True, id="empty-body"),
        pytest.param(None, "connection refused", False, id="connection-refused"),
    ],
)
async def test_cloud_failures_fall_back_to_the_local_model(
    start: Any, proxy: FaultProxy, fault: Fault | None, expected: str, estimated: bool
) -> None:
    options: dict[str, Any] = dict(FAST_LOCAL)
    if fault is None:  # nothing listens there; the setting wins over OPENAI_BASE_URL
        options["cloud"] = {"baseUrl": f"http://127.0.0.1:{free_port()}/v1"}
    else:
        proxy.reset(fault)
    session = await start(options=options, env=cloud_env(proxy.url))
    client = session.client
    open_doc(client)
    explain = asyncio.ensure_future(until_first_chunk_then_cancel(session, {"uri": URI, "range": FILE_SIZE}, "x"))
    assert isinstance(await complete_tiny(client), list)  # served meanwhile
    result = await explain

    assert result["backend"] == "local" and result["text"]
    assert expected in result["reason"] and result["reason"].endswith("Explain runs on the local model.")
    assert KEY not in json.dumps(result) and not any(KEY in m for m in session.shown())
    assert any(expected in m for m in session.shown())
    rows = await spent(session)
    [cloud] = [r for r in rows if r["backend"] == "cloud"]
    assert cloud["outcome"] == "error" and bool(cloud["estimated"]) == estimated
    assert (cloud["prompt_tokens"] > 0) == estimated  # a request the server accepted may be billed
    [local] = [r for r in rows if r["task"] == "explain" and r["backend"] == "local"]
    assert local["outcome"] == "cancelled" and local["completion_tokens"] > 0
    status = plain((await command(client, "tandem.status"))["backends"])["cloud"]
    assert status["healthy"] is False and expected in status["lastError"]


@pytest.mark.parametrize(
    ("fault", "requests", "outcome", "estimated"),
    [
        pytest.param(Fault("500", times=1), 2, "ok", False, id="500-then-ok"),
        pytest.param(Fault("429", times=1, retry_after="1"), 2, "ok", False, id="429-retry-after"),
        pytest.param(Fault("no_usage"), 1, "ok", True, id="stream-without-usage"),
        pytest.param(Fault("drop", after_events=4), 1, "error", True, id="dropped-mid-stream"),
    ],
)
async def test_cloud_faults_without_fallback(
    start: Any, proxy: FaultProxy, fault: Fault, requests: int, outcome: str, estimated: bool
) -> None:
    session = await start(options=FAST_LOCAL, env=cloud_env(proxy.url))
    client = session.client
    open_doc(client)
    proxy.reset(fault)
    explain = asyncio.ensure_future(command(client, "tandem.explain", {"uri": URI, "range": FILE_SIZE, "id": "f"}))
    assert isinstance(await complete_tiny(client), list)  # served meanwhile
    result = await explain

    assert result["backend"] == "cloud" and result["outcome"] == outcome and result["reason"] is None
    assert len(proxy.state.seen) == requests
    if fault.retry_after:
        assert proxy.state.seen[1].at - proxy.state.seen[0].at >= 1.0  # Retry-After honoured
    if outcome == "error":  # what streamed is kept, with why it stopped
        assert result["text"].startswith(session.text_of("f")) and session.text_of("f")
        assert "(The reply broke off: the connection to" in result["text"] and "dropped mid-reply" in result["text"]
    else:
        assert result["text"] == session.text_of("f") != ""
    assert result["usage"]["estimated"] == estimated
    [row] = [r for r in await spent(session) if r["task"] == "explain"]
    assert (row["backend"], row["outcome"], bool(row["estimated"])) == ("cloud", outcome, estimated)
    assert row["completion_tokens"] > 0


async def test_two_megabyte_selection(start: Any, scripted: ScriptedServer) -> None:
    session = await start(env=cloud_env(scripted.url))
    client = session.client
    text = "".join(f"def helper_{i}(value):\n    return value * {i}\n\n\n" for i in range(50_000))[: 2 * 2**20]
    text += "\ndef main():\n    "
    open_doc(client, text)
    lines = text.split("\n")
    whole = span((0, 0), (len(lines) - 1, len(lines[-1])))
    scripted.scripts.append(Script("Many small helpers."))
    explain = asyncio.ensure_future(command(client, "tandem.explain", {"uri": URI, "range": whole}))
    assert isinstance(await complete_tiny(client), list)  # served meanwhile
    result = await explain

    assert result["text"] == "Many small helpers." and result["outcome"] == "ok"
    [request] = scripted.seen
    assert len(json.dumps(request.body)) < 30_000  # the selection was cut to the prompt's budget
    assert "characters long; only its first" in request.body["messages"][1]["content"]
    result = await command(client, "tandem.refactor", {"uri": URI, "range": whole})
    assert result["outcome"] == "error" and result["code"] is None
    assert result["text"].startswith("The selection is too large to refactor in one request (2,097,")
    assert len(scripted.seen) == 1


async def test_a_local_endpoint_serves_completions_and_local_commands(start: Any, proxy: FaultProxy) -> None:
    root = proxy.url.removesuffix("/v1")
    session = await start(options={"local": {"endpoint": root}}, env={"OPENAI_API_KEY": ""})
    client = session.client
    open_doc(client)
    assert isinstance(await complete_tiny(client), list)
    result = await command(client, "tandem.explain", {"uri": URI, "range": FILE_SIZE})

    assert result["backend"] == "endpoint" and result["text"]
    assert [r.path for r in proxy.state.seen] == ["/v1/completions", "/v1/completions"]
    served = proxy.state.seen[0].body["model"]
    assert served.endswith(".gguf")  # the model the endpoint lists, asked for at start
    model = (await command(client, "tandem.status"))["model"]
    assert plain(model)["state"] == "ready" and plain(model)["name"] == served
    rows = await spent(session)
    assert [(r["task"], r["backend"], r["model"]) for r in rows] == [
        ("completion", "endpoint", served),
        ("explain", "endpoint", served),
    ]


async def test_an_unreachable_endpoint_is_reported_once(start: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    session = await start(options={"local": {"endpoint": url}}, env={"OPENAI_API_KEY": ""})
    client = session.client
    assert await complete_tiny(client) == []
    assert await complete_tiny(client) == []
    expected = f"tandem: cannot connect to {url}/v1/ (connection refused)"
    await until(lambda: expected in session.shown())
    assert session.shown().count(expected) == 1
    model = plain((await command(client, "tandem.status"))["model"])
    assert model["state"] == "error" and model["endpoint"] == f"{url}/v1/"
