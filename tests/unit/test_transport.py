"""JSON-RPC framing and checks, without a server: each bad message becomes the error JSON-RPC names."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest

from lsp_server import transport
from lsp_server.transport import INVALID_REQUEST, MAX_CONTENT_LENGTH, PARSE_ERROR, Invalid


class BytesReader:
    """A `transport.Reader` over bytes in memory, counting the most read at once."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)
        self.largest_read = 0

    async def readline(self) -> bytes:
        return self._stream.readline(transport.MAX_HEADER_LINE)

    async def read(self, n: int) -> bytes:
        self.largest_read = max(self.largest_read, n)
        return self._stream.read(n)


def frame(body: bytes, header: str = "Content-Length") -> bytes:
    return f"{header}: {len(body)}\r\n\r\n".encode() + body


def read_all(data: bytes) -> list[Any]:
    async def collect() -> list[Any]:
        return [m async for m in transport.messages(BytesReader(data))]

    return asyncio.run(collect())


STATUS = {"jsonrpc": "2.0", "id": 3, "method": "workspace/executeCommand", "params": {"command": "tandem.status"}}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b'{"jsonrpc": "2.0", "id": 1, "method": ', Invalid, id="invalid-json"),
        pytest.param(b"[]", Invalid, id="empty-batch"),
        pytest.param(b"42", Invalid, id="not-an-object"),
        pytest.param(b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "x"}', Invalid, id="object-id"),
        pytest.param(b'{"jsonrpc": "2.0", "id": true, "method": "x"}', Invalid, id="boolean-id"),
        pytest.param(b'{"jsonrpc": "2.0", "id": 1.5, "method": "x"}', Invalid, id="fraction-id"),
        pytest.param(b'{"jsonrpc": "1.0", "id": 1, "method": "x"}', Invalid, id="wrong-version"),
        pytest.param(b'{"jsonrpc": "2.0", "id": 1, "method": 7}', Invalid, id="method-not-a-string"),
        pytest.param(json.dumps(STATUS).encode(), dict, id="valid"),
    ],
)
def test_each_message_is_an_object_or_what_is_wrong(body: bytes, expected: type) -> None:
    [message] = read_all(frame(body))
    assert isinstance(message, expected)


def test_codes_and_ids_follow_json_rpc() -> None:
    invalid_json = transport.parse(b"{")
    assert isinstance(invalid_json, Invalid) and (invalid_json.code, invalid_json.id) == (PARSE_ERROR, None)
    object_id = transport.parse(b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "x"}')
    assert isinstance(object_id, Invalid) and (object_id.code, object_id.id) == (INVALID_REQUEST, None)
    batch = transport.parse(json.dumps([STATUS, {"jsonrpc": "2.0", "method": "initialized"}]).encode())
    assert isinstance(batch, Invalid) and batch.code == INVALID_REQUEST and batch.batched == (3,)


def test_lone_surrogates_are_replaced_in_every_string() -> None:
    body = b'{"jsonrpc": "2.0", "method": "x\\ud800", "params": {"k\\udc80": ["a\\udfffb", 1]}}'
    message = transport.parse(body)
    assert message == {"jsonrpc": "2.0", "method": "x\ufffd", "params": {"k\ufffd": ["a\ufffdb", 1]}}
    pair = transport.parse(b'{"jsonrpc": "2.0", "method": "\\ud83d\\ude00"}')
    assert pair == {"jsonrpc": "2.0", "method": "\U0001f600"}  # an escaped pair is one character, kept


def test_invalid_utf8_is_replaced() -> None:
    message = transport.parse(b'{"jsonrpc": "2.0", "method": "a\xff\xfeb"}')
    assert message == {"jsonrpc": "2.0", "method": "a\ufffd\ufffdb"}


def test_an_oversized_body_is_discarded_in_pieces_and_the_next_message_read() -> None:
    head = b'{"jsonrpc": "2.0", "id": 7, "method": "workspace/executeCommand", "params": "'
    huge = head + b"x" * (MAX_CONTENT_LENGTH + 1 - len(head))
    reader = BytesReader(frame(huge) + frame(json.dumps(STATUS).encode()))

    async def collect() -> list[Any]:
        return [m async for m in transport.messages(reader)]

    too_large, following = asyncio.run(collect())
    assert isinstance(too_large, Invalid) and (too_large.code, too_large.id) == (INVALID_REQUEST, 7)
    assert too_large.tell_user is not None
    assert following == STATUS
    assert reader.largest_read <= 2**20  # never the whole body at once


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b'{"method": "x", "params": {"id": 9}, "id": 7', id="params-first"),
        pytest.param(b'{"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"id": 9', id="notification"),
    ],
)
def test_an_oversized_body_whose_id_comes_late_is_answered_with_null(head: bytes) -> None:
    huge = head + b"x" * (MAX_CONTENT_LENGTH + 1 - len(head))
    [too_large] = read_all(frame(huge))
    assert isinstance(too_large, Invalid) and too_large.id is None


def test_headers_in_any_case_junk_skipped_and_a_cut_stream_ends() -> None:
    body = json.dumps(STATUS).encode()
    data = b"junk line\r\n\r\n" + frame(body, "content-length") + frame(body)[:-5]
    assert read_all(data) == [STATUS]
