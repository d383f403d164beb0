"""Bad input and careless use through the real server (issue 20): text no encoder takes, files and
secrets that must not reach the cloud, a ledger whose files turn immutable mid-session."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from lsp_server.app import AUDIT_FILE
from lsp_server.config import max_threads
from lsp_server.ledger import default_path
from lsp_server.tools.session import plain
from lsp_server.transport import MAX_CONTENT_LENGTH
from tests.conftest import REPO, Client, command, serving, start_client, until
from tests.e2e.test_completion import inline_params, insert, ledger_rows, open_doc, status
from tests.e2e.test_reconfigure import reconfigure
from tests.loopback import ScriptedServer

LONE_SURROGATE = "# \udc80\ndef f(a):\n    "
"""A JSON `\\udc80` escape in didOpen: a lone surrogate, which the model's tokenizer cannot encode."""
OTHER_URI = (REPO / "tandem_other.py").as_uri()


async def answered(client: Client, position: types.Position, uri: str) -> list[types.InlineCompletionItem]:
    """An invoked inline completion's items; the test fails on its timeout if none comes."""
    params = inline_params(position, invoked=True, uri=uri)
    result = await client.text_document_inline_completion_async(params)
    assert isinstance(result, types.InlineCompletionList), result
    return list(result.items)


async def test_a_lone_surrogate_never_stops_completions(client: Client) -> None:
    uri = (REPO / "tandem_surrogate.py").as_uri()
    open_doc(client, LONE_SURROGATE, uri)
    await answered(client, types.Position(2, 4), uri)  # before: the model's worker died, no answer ever
    insert(client, 2, types.Position(0, 3), "\ud800", uri)  # a didChange may carry one too
    await answered(client, types.Position(2, 4), uri)
    open_doc(client, "def add(a, b):\n    return ", OTHER_URI)
    await answered(client, types.Position(1, 11), OTHER_URI)
    report = await status(client)
    assert report["counters"]["generations"] >= 2
    assert not any("UnicodeEncodeError" in m.message for m in client.messages)


@pytest.fixture
def cloud() -> Iterator[ScriptedServer]:
    """A cloud stub that records what reaches it."""
    server = ScriptedServer()
    yield server
    server.close()


async def explain(client: Client, chunks: list[dict[str, Any]], uri: str, request_id: str) -> dict[str, Any]:
    """tandem.explain on a whole small document; a local answer is cancelled once it has begun (slow on 2 cores)."""
    argument = {"uri": uri, "range": {"start": {"line": 0, "character": 0}, "end": {"line": 3, "character": 0}}}
    params = types.ExecuteCommandParams(command="tandem.explain", arguments=[{**argument, "id": request_id}])
    pending = asyncio.wrap_future(
        client.protocol.send_request(types.WORKSPACE_EXECUTE_COMMAND, params, msg_id=request_id)
    )
    await until(lambda: pending.done() or any(c["id"] == request_id for c in chunks))
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=request_id))
    return dict(plain(await asyncio.wait_for(pending, 60)))


SECRETS = {
    "hf": "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",
    "gitlab": "glpat-PtYgjmUhBel31iEl2hpC",
    "bearer": "E40o1C6xc4sohdmM0Lm7exG3lCMqXXQ8agOMTNwn",
    "yaml": "Pg-s3cret!2024",
    "url": "p@ss@w0rd",
}
CONFIG = (
    f'login(token="{SECRETS["hf"]}")\n'
    f"git clone https://oauth2:{SECRETS['gitlab']}@gitlab.com/acme/app.git\n"
    f'curl -H "Authorization: Bearer {SECRETS["bearer"]}" https://api.example.com\n'
    f"POSTGRES_PASSWORD: {SECRETS['yaml']}\n"
    f"DATABASE_URL=postgres://app:{SECRETS['url']}@db.internal:5432/app\n"
)


async def test_denied_files_and_secrets_never_reach_the_cloud(tmp_path: Path, cloud: ScriptedServer) -> None:
    env = {"OPENAI_API_KEY": "sk-test-7c2e9a41b5d84f06a3e1c9b7d2f5a8e4", "OPENAI_BASE_URL": cloud.url}
    client = await start_client(tmp_path, options={"local": {"contextSize": 256}}, env=env)
    chunks: list[dict[str, Any]] = []
    client.feature("tandem/assistChunk")(lambda params: chunks.append(plain(params)))
    try:
        config_uri = (REPO / "deploy.sh").as_uri()
        open_doc(client, CONFIG, config_uri)
        result = await explain(client, chunks, config_uri, "config")
        assert result["backend"] == "cloud", result
        [seen] = cloud.seen
        sent = json.dumps(seen.body)
        assert [name for name, secret in SECRETS.items() if secret in sent] == []

        # At the workspace root, in upper case; and a buffer that is no file, by its name.
        for request_id, uri, pattern in [
            ("pem", (REPO / "KEY.PEM").as_uri(), "'*.pem'"),
            ("env", (REPO / ".ENV").as_uri(), "'.env*'"),
            ("untitled", "untitled:.env", "'.env*'"),
        ]:
            open_doc(client, "API_KEY=abc\nDEBUG=1\nPORT=80\n", uri)
            result = await explain(client, chunks, uri, request_id)
            assert result["backend"] == "local", result
            assert f"matches the cloud deny pattern {pattern} (privacy.cloudDeny)" in result["reason"]
        assert len(cloud.seen) == 1
    finally:
        await client.shutdown_session()
        await client.stop()


def _chattr(flag: str, files: list[Path]) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", flag, *map(str, files)], capture_output=True).returncode == 0


async def test_ledger_files_made_immutable_mid_session(tmp_path: Path) -> None:
    """Before: the next ledger write after `chattr +i` killed the server with SIGBUS (WAL's mapped -shm)."""
    client = await start_client(tmp_path)
    ledger = default_path(tmp_path)
    files: list[Path] = []
    try:
        open_doc(client, "def add(a, b):\n    return ", OTHER_URI)
        await answered(client, types.Position(1, 11), OTHER_URI)
        await client.workspace_execute_command_async(types.ExecuteCommandParams(command="tandem.usage"))
        files = sorted(ledger.parent.glob(ledger.name + "*"))
        if not _chattr("+i", files):
            pytest.skip("chattr +i needs root on a file system with the immutable flag")
        open_doc(client, "def sub(a, b):\n    return ", OTHER_URI)
        await answered(client, types.Position(1, 11), OTHER_URI)
        usage = plain(await client.workspace_execute_command_async(types.ExecuteCommandParams(command="tandem.usage")))
        assert usage["inMemory"] is True
        await until(lambda: any("kept in memory" in m.message for m in client.messages))
        _chattr("-i", files)
        files = []
        open_doc(client, "def mul(a, b):\n    return ", OTHER_URI)
        await answered(client, types.Position(1, 11), OTHER_URI)
        generations = (await status(client))["counters"]["generations"]
    finally:
        if files:
            _chattr("-i", files)
        await client.shutdown_session()
        await client.stop()
    assert generations == 3
    assert len(ledger_rows(tmp_path)) == 3  # the row kept in memory was saved at shutdown


class RawServer:
    """`tandem serve` over stdio, spoken to in raw bytes; what it writes is read by a thread."""

    def __init__(self, data_dir: Path) -> None:
        env = {**os.environ, "TANDEM_DATA_DIR": str(data_dir)}
        command = [sys.executable, "-m", "lsp_server", "serve"]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        while True:
            length = 0
            while (line := stdout.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if not length:
                return
            self.received.put(json.loads(stdout.read(length)))

    def send(self, body: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self.proc.stdin.flush()

    def request(self, msg_id: int, method: str, params: Any) -> None:
        self.send(json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}).encode())

    def answer(self, wanted: Callable[[dict[str, Any]], bool], timeout_s: float = 120) -> dict[str, Any]:
        """The next message `wanted` accepts (others are dropped); the test fails after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            message = self.received.get(timeout=max(0.0, deadline - time.monotonic()))
            if wanted(message):
                return message

    def error_for(self, msg_id: Any) -> dict[str, Any]:
        """The error answer with `msg_id` (None: null), checked to carry no Python traceback."""
        message = self.answer(lambda m: "error" in m and "method" not in m and m.get("id", "absent") == msg_id)
        assert "Traceback" not in json.dumps(message) and "data" not in message["error"], message
        return dict(message["error"])

    def initialize(self) -> None:
        self.request(1, "initialize", {"capabilities": {}})
        self.answer(lambda m: m.get("id") == 1)
        self.send(b'{"jsonrpc": "2.0", "method": "initialized", "params": {}}')

    def status(self, msg_id: int) -> dict[str, Any]:
        self.request(msg_id, "workspace/executeCommand", {"command": "tandem.status"})
        return dict(self.answer(lambda m: m.get("id") == msg_id)["result"])

    def close(self) -> str:
        """Shut down and exit; the server's stderr."""
        self.request(99, "shutdown", None)
        self.answer(lambda m: m.get("id") == 99)
        self.send(b'{"jsonrpc": "2.0", "method": "exit"}')
        _, stderr = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0
        return str(stderr.decode(errors="replace"))


def test_transport_errors_are_answered_as_json_rpc_says(tmp_path: Path) -> None:
    """Before: invalid JSON and a batch got a popup and no answer (the batched request waited forever), an object
    id got -32603 with a Python traceback, and a body of any length was buffered whole."""
    server = RawServer(tmp_path)
    try:
        server.initialize()
        server.send(b'{"jsonrpc": "2.0", "id": 5, "method": "workspace/executeCommand", "params": {')
        assert server.error_for(None)["code"] == -32700
        batch = [
            {"jsonrpc": "2.0", "id": 6, "method": "workspace/executeCommand", "params": {"command": "tandem.status"}},
            {"jsonrpc": "2.0", "method": "initialized", "params": {}},
        ]
        server.send(json.dumps(batch).encode())
        assert server.error_for(None)["code"] == -32600  # the batch as a whole, as JSON-RPC says
        assert server.error_for(6)["code"] == -32600  # and its request, so that the client does not wait
        server.request({"nested": 1}, "workspace/executeCommand", {"command": "tandem.status"})  # type: ignore[arg-type]
        assert server.error_for(None)["code"] == -32600
        # Over the bound: discarded in pieces as it arrives, answered by its id (read from the body's start).
        head = b'{"jsonrpc": "2.0", "id": 7, "method": "workspace/executeCommand", "params": {"command": "'
        size = MAX_CONTENT_LENGTH + 1
        assert server.proc.stdin is not None
        server.proc.stdin.write(f"Content-Length: {size}\r\n\r\n".encode() + head)
        for _ in range(size // 2**20):
            server.proc.stdin.write(b"x" * 2**20)
        server.proc.stdin.write(b"x" * (size - len(head) - size // 2**20 * 2**20))
        server.proc.stdin.flush()
        error = server.error_for(7)
        assert error["code"] == -32600 and "limit" in error["message"]
        popup = server.answer(lambda m: m.get("method") == "window/showMessage")
        assert "discarded" in popup["params"]["message"]
        assert "counters" in server.status(8)  # and the server serves on
        # Invalid UTF-8 in a document (Neovim sends a latin-1 buffer's bytes as they are): replaced, and it opens.
        document = {"uri": "file:///tmp/latin1.py", "languageId": "python", "version": 1, "text": "@@"}
        opened = {"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": document}}
        server.send(json.dumps(opened).encode().replace(b"@@", b"# caf\xe9\\ndef add(a, b):\\n    return "))
        position = {"line": 2, "character": 11}
        params = {"textDocument": {"uri": document["uri"]}, "position": position, "context": {"triggerKind": 1}}
        server.request(9, "textDocument/inlineCompletion", params)
        assert server.answer(lambda m: m.get("id") == 9)["result"]["items"]  # before: "document is not open"
    finally:
        stderr = server.close()
    assert "Traceback" not in stderr, stderr[-3000:]


async def test_lone_surrogates_in_command_strings_reach_the_cloud_replaced(
    tmp_path: Path, cloud: ScriptedServer
) -> None:
    """Every client string on its way to a model: the instruction, error text, diagnostics and the file's name."""
    env = {"OPENAI_API_KEY": "sk-test-7c2e9a41b5d84f06a3e1c9b7d2f5a8e4", "OPENAI_BASE_URL": cloud.url}
    async with serving(tmp_path, env=env) as client:
        uri = (REPO / "tandem_\udc80.py").as_uri()
        open_doc(client, "def f(a):\n    return a\n", uri)
        argument = {
            "uri": uri,
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 2, "character": 0}},
            "instruction": "why \ud800 here?",
            "errorText": "Traceback \udfff",
            "diagnostics": ["line 1: error: bad \udc00"],
        }
        result = await command(client, "tandem.debug", argument)
    assert result["backend"] == "cloud" and result["outcome"] == "ok", result
    [seen] = cloud.seen
    sent = seen.body["messages"][-1]["content"]
    for replaced in ("tandem_\ufffd.py", "why \ufffd here?", "Traceback \ufffd", "bad \ufffd"):
        assert replaced in sent


async def test_an_absurd_thread_count_is_clamped_with_a_message(tmp_path: Path) -> None:
    """Before: `local.threads: 100000` aborted the process (std::bad_alloc) at the first completion."""
    most = max_threads()
    async with serving(tmp_path, options={"local": {"threads": 100_000}}) as client:
        open_doc(client, "def add(a, b):\n    return ", OTHER_URI)
        await answered(client, types.Position(1, 11), OTHER_URI)
        said = [m.message for m in client.messages if "local.threads=100000" in m.message]
        assert said and f"{most:,} used" in said[0], said
        # Through workspace/didChangeConfiguration as well: a sane value reloads, an absurd one is clamped again.
        for threads, loads in ((1, 2), (50_000, 3)):
            reconfigure(client, {"local": {"threads": threads}})

            async def reloaded(loads: int = loads) -> bool:
                report = await status(client)
                return bool(report["modelLoads"] == loads and report["model"]["state"] == "ready")

            await until(reloaded)
            await answered(client, types.Position(1, 11), OTHER_URI)
        assert any("local.threads=50000" in m.message for m in client.messages)
        assert (await status(client))["counters"]["generations"] == 3


async def test_an_unwritable_audit_log_keeps_the_reply_and_its_ledger_row(
    tmp_path: Path, cloud: ScriptedServer
) -> None:
    """Before: the reply was thrown away (-32603) and no ledger row written, so the budget missed the spend."""
    (tmp_path / AUDIT_FILE).mkdir()  # as root, chmod would not stop the write: a folder in the file's place does
    env = {"OPENAI_API_KEY": "sk-test-7c2e9a41b5d84f06a3e1c9b7d2f5a8e4", "OPENAI_BASE_URL": cloud.url}
    async with serving(tmp_path, env=env) as client:
        open_doc(client, "def f(a):\n    return a\n", OTHER_URI)
        argument = {
            "uri": OTHER_URI,
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 2, "character": 0}},
        }
        for _ in range(2):
            result = await command(client, "tandem.explain", argument)
            assert (result["backend"], result["outcome"], result["text"]) == ("cloud", "ok", "Hello there."), result
        usage = await command(client, "tandem.usage")
        said = [m.message for m in client.messages if "audit log" in m.message]
    [row] = [row for row in usage["totals"] if row["backend"] == "cloud"]
    assert row["requests"] == 2 and row["promptTokens"] > 0
    assert len(said) == 1 and "cannot be written" in said[0], said


def whole(text: str) -> dict[str, Any]:
    """The range of all of `text` (its last line's end given as past it: the end of the line, LSP says)."""
    return {"start": {"line": 0, "character": 0}, "end": {"line": text.count("\n"), "character": 2**31 - 1}}


async def server_copy(client: Client, cloud: ScriptedServer, uri: str, text: str) -> str:
    """The server's copy of the document the client holds as `text`, as the cloud receives it: tandem.explain over
    all of it, the selection read from the request the loopback cloud recorded (its final newlines are not sent)."""
    await command(client, "tandem.explain", {"uri": uri, "range": whole(text)})
    content = cloud.seen[-1].body["messages"][-1]["content"]
    match = re.search(r"\nSelected code \([^)]*\):\n(`{3,})[^\n]*\n(.*?)\n\1(?:\n|$)", content, re.DOTALL)
    assert match is not None, content
    return match.group(2)


def change(
    version: int, uri: str, *edits: tuple[tuple[int, int], tuple[int, int], str]
) -> types.DidChangeTextDocumentParams:
    return types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[
            types.TextDocumentContentChangePartial(
                range=types.Range(types.Position(*start), types.Position(*end)), text=new_text
            )
            for start, end, new_text in edits
        ],
    )


async def test_a_bad_change_rejects_only_itself_and_a_stale_version_is_ignored(
    tmp_path: Path, cloud: ScriptedServer
) -> None:
    """Before: one bad change discarded the whole batch, valid parts too, and versions going back were accepted."""
    env = {"OPENAI_API_KEY": "sk-test-7c2e9a41b5d84f06a3e1c9b7d2f5a8e4", "OPENAI_BASE_URL": cloud.url}
    async with serving(tmp_path, env=env) as client:
        open_doc(client, "alpha\nbeta\ngamma\n", OTHER_URI)
        batch = [
            ((0, 0), (0, 0), "X"),
            ((9, 0), (9, 0), "past the end"),
            ((1, 3), (1, 1), "reversed"),
            ((2, 5), (2, 5), "Y"),
        ]
        client.text_document_did_change(change(2, OTHER_URI, *batch))
        text = "Xalpha\nbeta\ngammaY\n"  # the editor's: it applied the changes it could
        assert await server_copy(client, cloud, OTHER_URI, text) == text.rstrip("\n")
        client.text_document_did_change(change(2, OTHER_URI, ((0, 0), (0, 0), "replayed ")))
        client.text_document_did_change(change(1, OTHER_URI, ((0, 0), (0, 0), "stale ")))
        assert await server_copy(client, cloud, OTHER_URI, text) == text.rstrip("\n")
        client.text_document_did_change(change(3, OTHER_URI, ((1, 0), (1, 4), "BETA")))
        text = "Xalpha\nBETA\ngammaY\n"
        assert await server_copy(client, cloud, OTHER_URI, text) == text.rstrip("\n")
        messages = [m.message for m in client.messages]
    assert sum("left out" in m for m in messages) == 2, messages  # each bad change said
    assert sum("version went back" in m for m in messages) == 1, messages  # said once
