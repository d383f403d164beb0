"""Bad input and faults: each gets a clear message and the server keeps serving."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from lsp_server.tools.session import plain
from tests.conftest import Client, serving, start_client, until
from tests.e2e.test_completion import (
    LONG_LIST,
    SOURCE,
    URI,
    complete,
    end_position,
    inline_params,
    ledger_rows,
    open_doc,
    status,
)

GGUF_HEADER = b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") * 2


async def model_error(client: Client) -> str:
    for _ in range(1200):
        model = (await status(client))["model"]
        if model["state"] != "loading":
            assert model["state"] == "error", model
            return str(model["error"])
        await asyncio.sleep(0.05)
    raise AssertionError("model never finished loading")


def _bad_models(tmp_path: Path) -> list[tuple[str, str, str]]:
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 this is a zip file, not a model")
    huge = tmp_path / "huge.gguf"
    with huge.open("wb") as handle:  # sparse: claims 4 TiB without using the disk
        handle.write(GGUF_HEADER)
        handle.truncate(4 * 2**40)
    folder = tmp_path / "a-folder.gguf"
    folder.mkdir()
    return [
        ("missing", str(tmp_path / "nope.gguf"), "model file not found"),
        ("not-gguf", str(not_gguf), "not a GGUF model file"),
        ("directory", str(folder), "not a file"),
        ("too-large", str(huge), "too large for memory"),
    ]


@pytest.mark.parametrize("case", range(4), ids=["missing", "not-gguf", "directory", "too-large"])
async def test_bad_model_file_is_reported_and_server_keeps_serving(case: int, tmp_path: Path) -> None:
    _, path, expected = _bad_models(tmp_path)[case]
    async with serving(tmp_path, options={"local": {"modelPath": path}}) as client:
        assert expected in await model_error(client)
        open_doc(client, SOURCE)
        items = await complete(client, end_position(SOURCE, "visual-studio-code"))
        assert items == []
        shown = [m.message for m in client.messages]
        assert sum(expected in m for m in shown) == 1, shown  # said once, not per request
        assert (await status(client))["counters"]["inlineRequests"] == 1


async def test_truncated_gguf_fails_to_load_with_a_message(tmp_path: Path) -> None:
    broken = tmp_path / "truncated.gguf"
    broken.write_bytes(GGUF_HEADER + b"\x00" * 64)
    async with serving(tmp_path, env={"TANDEM_MODEL": str(broken)}) as client:
        assert "failed to load" in await model_error(client)


async def test_bad_setting_is_reported_once_and_defaulted(tmp_path: Path) -> None:
    async with serving(tmp_path, options={"completion": {"debounceMs": "soon", "multiline": "sometimes"}}) as client:
        report = await status(client)
        assert report["settings"] == {"debounceMs": "auto", "multiline": "auto"}
        messages = [m.message for m in client.messages]
        assert any("completion.debounceMs" in m for m in messages)
        assert any("completion.multiline" in m for m in messages)


async def test_unopened_and_closed_documents_get_an_error(client: Client, editor: str) -> None:
    with pytest.raises(Exception, match="document is not open"):
        await client.text_document_inline_completion_async(inline_params(types.Position(0, 0)))
    open_doc(client, SOURCE)
    client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(URI)))
    with pytest.raises(Exception, match="document is not open"):
        await client.text_document_inline_completion_async(inline_params(types.Position(0, 0)))
    open_doc(client, SOURCE)
    assert await complete(client, end_position(SOURCE, editor))


async def test_positions_past_the_end(client: Client, editor: str) -> None:
    open_doc(client, SOURCE)
    last = end_position(SOURCE, editor)
    # Past the end of a line means its end (LSP); past the last line is an error.
    items = await complete(client, types.Position(last.line, last.character + 500))
    assert items and items[0].range is not None
    with pytest.raises(Exception, match="past the end of the document"):
        await client.text_document_inline_completion_async(inline_params(types.Position(last.line + 5, 0)))
    assert (await status(client))["counters"]["inlineRequests"] >= 1


async def test_five_megabyte_document(client: Client, editor: str) -> None:
    body = "".join(f"def helper_{i}(value):\n    return value * {i}\n\n\n" for i in range(120_000))
    text = body[: 5 * 2**20] + "\ndef main():\n    "
    assert len(text) > 5 * 2**20
    open_doc(client, text)
    items = await complete(client, end_position(text, editor))
    assert isinstance(items, list)
    assert (await status(client))["counters"]["generations"] == 1


async def test_binary_content_and_control_characters(client: Client, editor: str) -> None:
    # What an editor sends for a binary file read leniently: NULs, replacement chars, lone form feeds.
    raw = bytes(range(256)) * 8 + b"\xff\xfe\xc3\x28"
    text = raw.decode("utf-8", errors="replace") + "\n\x0c\ndef f():\n    "
    open_doc(client, text)
    items = await complete(client, end_position(text, editor))
    assert isinstance(items, list)
    assert (await status(client))["model"]["state"] == "ready"


async def test_flood_of_500_requests_in_a_second(editor: str, tmp_path: Path) -> None:
    # The debounce is set far above the gaps, so a loaded machine that stalls the sender cannot let a
    # generation start mid-flood; what is tested is that every request is answered and the server serves on.
    async with serving(tmp_path, editor, {"completion": {"debounceMs": 1000}}) as client:
        open_doc(client, SOURCE)
        position = end_position(SOURCE, editor)
        pending = []
        for _ in range(500):
            pending.append(asyncio.ensure_future(client.text_document_inline_completion_async(inline_params(position))))
            await asyncio.sleep(0.001)
        results = await asyncio.wait_for(asyncio.gather(*pending), timeout=60)
        assert len(results) == 500
        report = await status(client)
        assert report["counters"]["inlineRequests"] == 500
        assert report["counters"]["generations"] <= 2
        assert await complete(client, position)  # still serving


def test_raw_wire_faults_and_exit_codes(tmp_path: Path) -> None:
    """Raw bytes over stdio: a body that is not UTF-8 and malformed params are survived; exit codes."""

    def frame(body: bytes) -> bytes:
        return f"Content-Length: {len(body)}\r\n\r\n".encode() + body

    message = _message
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}
    env = {**os.environ, "TANDEM_DATA_DIR": str(tmp_path)}
    stdin = (
        message(init)
        + message({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        + frame(b'{"jsonrpc": "2.0", "id": 2, "method": "\xff\xfe"}')
        + message(
            {
                "jsonrpc": "2.0",
                "id": 4,
                "method": "textDocument/inlineCompletion",
                "params": {"textDocument": 42},
            }
        )
        + message(
            {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "workspace/executeCommand",
                "params": {"command": "tandem.status"},
            }
        )
    )
    without_shutdown = subprocess.run(
        [sys.executable, "-m", "lsp_server", "serve"],
        input=stdin + message({"jsonrpc": "2.0", "method": "exit"}),
        capture_output=True,
        env=env,
        timeout=120,
    )
    responses = _responses(without_shutdown.stdout)
    assert responses[4]["error"]["code"] in (-32602, -32603)  # malformed params: an error answer
    assert "counters" in responses[3]["result"]  # and the server kept serving
    assert without_shutdown.returncode == 1
    with_shutdown = subprocess.run(
        [sys.executable, "-m", "lsp_server", "serve"],
        input=message(init)
        + message({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        + message({"jsonrpc": "2.0", "id": 9, "method": "shutdown"})
        + message({"jsonrpc": "2.0", "method": "exit"}),
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert with_shutdown.returncode == 0, with_shutdown.stderr[-2000:]


def _responses(stdout: bytes) -> dict[int, dict[str, object]]:
    """The JSON-RPC responses in a captured stdout, by id."""
    found: dict[int, dict[str, object]] = {}
    while stdout:
        header, _, rest = stdout.partition(b"\r\n\r\n")
        length = int(header.split(b"Content-Length:")[1].split(b"\r\n")[0])
        body = json.loads(rest[:length])
        if isinstance(body.get("id"), int):
            found[body["id"]] = body
        stdout = rest[length:]
    return found


@pytest.mark.parametrize("damage", ["corrupt", "unwritable"])
async def test_damaged_ledger_never_stops_completions(damage: str, tmp_path: Path) -> None:
    """A corrupt ledger is moved aside and replaced; an unwritable one is kept in memory. Said once."""
    if damage == "corrupt":
        data = tmp_path / "data"
        data.mkdir()
        (data / "ledger.sqlite3").write_bytes(b"this is not a database" * 512)
    else:
        blocker = tmp_path / "a-file"
        blocker.write_text("a regular file where a directory should be")
        data = blocker / "data"
    async with serving(data) as client:
        open_doc(client, SOURCE)
        position = end_position(SOURCE, "visual-studio-code")
        assert await complete(client, position)
        usage = plain(await client.workspace_execute_command_async(types.ExecuteCommandParams(command="tandem.usage")))
        totals = usage["totals"]
        assert sum(row["requests"] for row in totals) == 1  # the generation was counted all the same
        ledger_messages = [m.message for m in client.messages if "ledger" in m.message.lower()]
        assert len(ledger_messages) == 1, [m.message for m in client.messages]
        if damage == "corrupt":
            assert list(data.glob("ledger.sqlite3.corrupt-*")), "the bad file is kept aside"


def test_exit_with_work_in_flight_writes_nothing_after_it(tmp_path: Path) -> None:
    """An editor restarting the server: answers still due when `exit` closes the output are dropped quietly.

    pygls reported each failed write as an error, whose report failed to write too: 10,000-19,000 tracebacks."""
    server = subprocess.Popen(
        [sys.executable, "-m", "lsp_server", "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TANDEM_DATA_DIR": str(tmp_path)},
    )
    assert server.stdin is not None and server.stdout is not None
    stdin, stdout = server.stdin, server.stdout

    def send(*messages: dict[str, Any]) -> None:
        stdin.write(b"".join(_message(m) for m in messages))
        stdin.flush()

    def read_until(wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while not wanted(message := _read_message(stdout)):
            pass
        return message

    def status_request(msg_id: int) -> dict[str, Any]:
        params = {"command": "tandem.status"}
        return {"jsonrpc": "2.0", "id": msg_id, "method": "workspace/executeCommand", "params": params}

    init = {"capabilities": {}, "initializationOptions": {"completion": {"multiline": "always", "maxTokens": 400}}}
    document = {"uri": URI, "languageId": "python", "version": 1, "text": LONG_LIST}
    send(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": init,
        },
        {"jsonrpc": "2.0", "method": "initialized", "params": {}},
        {"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": document}},
    )
    for msg_id in range(2, 10_000):  # until the model has loaded
        send(status_request(msg_id))
        if read_until(lambda m, i=msg_id: m.get("id") == i)["result"]["model"]["state"] == "ready":
            break
        time.sleep(0.05)
    position = {"line": LONG_LIST.count("\n"), "character": 0}
    inline = {"textDocument": {"uri": URI}, "position": position, "context": {"triggerKind": 1}}
    send({"jsonrpc": "2.0", "id": "long", "method": "textDocument/inlineCompletion", "params": inline})
    read_until(lambda m: m.get("method") == "tandem/ghostText")  # a generation is running
    send(*(status_request(20_000 + i) for i in range(5)), {"jsonrpc": "2.0", "id": "bye", "method": "shutdown"})
    read_until(lambda m: m.get("id") == "bye")  # as editors do: `exit` once `shutdown` is answered
    send({"jsonrpc": "2.0", "method": "exit"}, *(status_request(30_000 + i) for i in range(5)))
    _, stderr = server.communicate(timeout=120)
    assert server.returncode == 0
    [row] = ledger_rows(tmp_path)  # the generation stopped by the shutdown kept its row
    assert row["outcome"] == "cancelled" and row["completion_tokens"] > 0
    assert b"Traceback" not in stderr and b"Failed to report error" not in stderr, stderr[-3000:].decode()


def _message(body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return f"Content-Length: {len(data)}\r\n\r\n".encode() + data


def _read_message(stream: Any) -> dict[str, Any]:
    """The next JSON-RPC message on a server's stdout."""
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    assert length, "the server closed its output"
    message: dict[str, Any] = json.loads(stream.read(length))
    return message


async def test_shutdown_with_a_generation_running_keeps_its_row(editor: str, tmp_path: Path) -> None:
    """The editor closes while a suggestion is being written: the generation stops and its tokens are recorded."""
    client = await start_client(tmp_path, editor, {"completion": {"maxTokens": 400, "multiline": "always"}})
    open_doc(client, LONG_LIST)
    pending = asyncio.ensure_future(
        client.text_document_inline_completion_async(inline_params(end_position(LONG_LIST, editor), invoked=True))
    )
    await until(lambda: client.ghost_text)  # a generation is running
    await client.shutdown_session()
    await client.stop()
    assert pending.done()  # answered before the server exited, not left waiting
    [row] = ledger_rows(tmp_path)
    assert row["outcome"] == "cancelled" and row["completion_tokens"] > 0
