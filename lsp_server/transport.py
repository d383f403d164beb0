"""JSON-RPC over a byte stream as LSP frames it: `Content-Length` headers, then one JSON object per message.

Plain Python: reads and checks messages, and says what is wrong with those that cannot be handled, for the
LSP layer to answer as JSON-RPC says (-32700 for invalid JSON, -32600 for an invalid request).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from lsp_server.documents import clean

MAX_CONTENT_LENGTH = 64 * 2**20
"""The largest message body read, in bytes: a longer one is discarded unread, in pieces, and answered with an
error (a 50 MB document still opens; a 2 GB header no longer makes the server buffer what arrives)."""
MAX_HEADER_LINE = 8192
"""Bytes of one header line read at a time; a longer line is junk, skipped piece by piece."""
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
_DISCARD_PIECE = 2**20
_CONTENT_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*(\d+)", re.IGNORECASE)
_LEADING_ID = re.compile(rb'^\s*\{(?:\s*"(?:jsonrpc|method)"\s*:\s*"[^"\\]*"\s*,)*\s*"id"\s*:\s*(-?\d+|"[^"\\]*")')

MsgId = int | str


class Reader(Protocol):
    """A byte stream: stdin read in a thread, or a socket."""

    async def readline(self) -> bytes:
        """Up to the next b"\\n" (included), at most `MAX_HEADER_LINE` bytes; b"" at the end of the stream."""
        ...

    async def read(self, n: int) -> bytes:
        """Up to `n` bytes, at least one; b"" at the end of the stream."""
        ...


@dataclass(frozen=True)
class Invalid:
    """A message that cannot be handled, and the error that answers it."""

    code: int
    message: str
    id: MsgId | None = None
    """The request's id when it could be read; None (JSON null) otherwise."""
    batched: tuple[MsgId, ...] = ()
    """A batch: the ids of its requests, each answered with this error too, so that none waits forever."""
    tell_user: str | None = None
    """What to show the user (once) when something they did was lost: a discarded didOpen, say."""


async def messages(reader: Reader) -> AsyncIterator[dict[str, Any] | Invalid]:
    """Each message of the stream in turn: a JSON-RPC object (every lone surrogate in its strings replaced, see
    `documents.clean`), or what is wrong with it. Ends with the stream."""
    while (length := await _content_length(reader)) is not None:
        if length > MAX_CONTENT_LENGTH:
            head = await _discard(reader, length)
            text = f"a message of {length:,} bytes is over tandem's limit of {MAX_CONTENT_LENGTH:,}: discarded unread"
            lost = f"a message over {MAX_CONTENT_LENGTH // 2**20} MiB was discarded (tandem reads no larger ones)"
            yield Invalid(INVALID_REQUEST, text, _leading_id(head), tell_user=lost)
            continue
        body = await _read_exactly(reader, length)
        if body is None:
            return  # the stream ended inside a message
        yield parse(body)


def parse(body: bytes) -> dict[str, Any] | Invalid:
    """One message body as a JSON-RPC object, or why it is not one. Invalid UTF-8 is replaced by U+FFFD (as
    editors do when they open such a file), so a document with a stray byte still opens."""
    try:
        data = json.loads(body.decode("utf-8", "replace"))
    except ValueError as exc:
        return Invalid(PARSE_ERROR, f"parse error: the message is not valid JSON ({exc})")
    if isinstance(data, list):
        ids = tuple(m["id"] for m in data if isinstance(m, dict) and "method" in m and _valid_id(m.get("id")))
        text = "invalid request: a batch (JSON array); LSP sends one message at a time"
        return Invalid(INVALID_REQUEST, text, batched=ids)
    if not isinstance(data, dict):
        return Invalid(INVALID_REQUEST, "invalid request: a message must be a JSON object")
    msg_id = data.get("id")
    if "id" in data and not _valid_id(msg_id):
        return Invalid(INVALID_REQUEST, f"invalid request: an id must be an integer or a string, not {_kind(msg_id)}")
    if data.get("jsonrpc") != "2.0":
        return Invalid(INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"', msg_id)
    if "method" in data and not isinstance(data["method"], str):
        return Invalid(INVALID_REQUEST, 'invalid request: "method" must be a string', msg_id)
    return _cleaned(data)  # type: ignore[no-any-return]


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", bool: "a boolean", float: "a fraction", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _cleaned(value: Any) -> Any:
    """`value` with every string (keys too) cleaned of lone surrogates: no client string reaches a model or the
    cloud with one (no encoder takes it). Costs a pass over the message, at C speed for ASCII text."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(k): _cleaned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cleaned(v) for v in value]
    return value


async def _content_length(reader: Reader) -> int | None:
    """Read one message's headers; its Content-Length, or None at the end of the stream. Lines that are not
    headers (junk between messages) are skipped, so a stream that lost its framing finds it again."""
    length: int | None = None
    while True:
        line = await reader.readline()
        if not line:
            return None
        if not line.strip():
            if length is not None:
                return length
            continue  # a blank line without a Content-Length before it
        if (match := _CONTENT_LENGTH.search(line)) is not None:
            length = int(match.group(1))


async def _read_exactly(reader: Reader, n: int) -> bytes | None:
    parts: list[bytes] = []
    while n > 0:
        part = await reader.read(n)
        if not part:
            return None
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


async def _discard(reader: Reader, n: int) -> bytes:
    """Read and drop `n` bytes a piece at a time; the first piece, where a request's id usually is."""
    head = b""
    while n > 0:
        part = await reader.read(min(n, _DISCARD_PIECE))
        if not part:
            break
        head = head or part
        n -= len(part)
    return head


def _leading_id(head: bytes) -> MsgId | None:
    """The id of a request whose id comes before its params (as vscode-jsonrpc and pygls write them): the
    request is answered and no client waits for it; None when it cannot be known without reading it all."""
    match = _LEADING_ID.match(head)
    if match is None:
        return None
    token = match.group(1)
    return token.decode("utf-8", "replace").strip('"') if token.startswith(b'"') else int(token)
