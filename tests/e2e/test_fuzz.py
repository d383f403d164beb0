"""A bounded random stream of valid and invalid LSP messages (fixed seed) through the real server: afterwards it
still answers a normal inline completion, and its copy of the fuzzed document matches the client's."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from lsp_server.documents import clean
from tests.conftest import REPO, Client, command, serving
from tests.e2e.test_bad_input import answered, server_copy
from tests.e2e.test_completion import open_doc
from tests.loopback import ScriptedServer

SEED = 20
MESSAGES = 3000
URI = (REPO / "tandem_fuzzed.py").as_uri()
PIECES = ["def ", "x", " ", "\n", "\r\n", "\t", "é", "中", "😀", "\U00010348", "\x00", "\ud800", "\udfff", "()"]
"""What inserted text is made of: ASCII, BMP and astral characters, NUL, LF and CRLF mixed, lone surrogates. (Not a
lone CR: LSP counts it as a line break, tandem does not, and editors never send one: they normalise line ends.)"""
GARBAGE = [b"{", b"[]", b"[1, 2]", b"42", b'"text"', b"null", b'{"jsonrpc": "2.0"}', b'{"jsonrpc": "1.0", "id": 1}']


class Editor:
    """The client's copy of one document, positions in utf-16 units as VS Code counts them."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.version = 1
        """The version of the last change sent."""
        self.synced = 1
        """The version of the last change the server took (a malformed notification it cannot)."""

    def lines(self) -> list[str]:
        return self.text.split("\n")

    def index(self, line: int, units: int) -> int:
        """Index into `text` of a position on a character boundary inside the line."""
        start = sum(len(text) + 1 for text in self.lines()[:line])
        at, count = start, 0
        while count < units:
            count += 2 if ord(self.text[at]) > 0xFFFF else 1
            at += 1
        return at

    def boundary(self, rng: random.Random, line: int) -> int:
        """A position in utf-16 units on a character boundary of `line`, before a final CR."""
        text = self.lines()[line].removesuffix("\r")
        cut = rng.randint(0, len(text))
        return sum(2 if ord(c) > 0xFFFF else 1 for c in text[:cut])

    def position(self, rng: random.Random) -> tuple[int, int]:
        line = rng.randrange(len(self.lines()))
        return line, self.boundary(rng, line)


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 6)))


def _as_received(text: str) -> str:
    """What the server keeps of `text` sent in JSON: an escaped high and low surrogate side by side are one
    character (as in the editor's UTF-16), a lone one becomes U+FFFD; one utf-16 unit each way, so positions agree."""
    return clean(json.loads(json.dumps(text)))


def _position(line: int, character: int) -> dict[str, int]:
    return {"line": line, "character": character}


def _change(rng: random.Random, editor: Editor) -> dict[str, Any]:
    """One content change, applied to `editor` when valid; an invalid one the server rejects alone."""
    kind = rng.choices(["valid", "past-end", "reversed"], weights=[8, 1, 1])[0]
    new_text = _text(rng)
    if kind == "valid":  # mostly typing and small edits, so the document grows
        start = editor.position(rng)
        end = rng.choices([start, (start[0], editor.boundary(rng, start[0])), editor.position(rng)], [6, 3, 1])[0]
        start, end = sorted([start, end])
    elif kind == "past-end":
        line = len(editor.lines()) + rng.randint(0, 3)
        start, end = (line, 0), (line + rng.randint(0, 2), 0)
    else:
        first = rng.randrange(len(editor.lines()))
        start, end = (first + 1, 0), (first, 0)  # the start may be past the end too: rejected either way
    change = {"range": {"start": _position(*start), "end": _position(*end)}, "text": new_text}
    if kind == "valid":
        begin, finish = editor.index(*start), editor.index(*end)
        editor.text = editor.text[:begin] + _as_received(new_text) + editor.text[finish:]
    return change


def _messages(rng: random.Random, editor: Editor) -> Iterator[dict[str, Any] | bytes]:
    """`MESSAGES` messages: JSON objects to send as they are, or raw bodies. `editor` follows what the valid changes
    do to the document."""
    ids = iter(range(10_000, 10_000 + MESSAGES))
    for _ in range(MESSAGES):
        kind = rng.choices(
            ["change", "bad-types", "inline", "unknown", "garbage", "bad-id", "stale", "settings", "other-doc"],
            weights=[40, 4, 6, 4, 4, 3, 2, 1, 3],
        )[0]
        if kind == "change":
            editor.version = editor.synced = editor.version + 1
            changes = [_change(rng, editor) for _ in range(rng.randint(1, 3))]
            identifier = {"uri": URI, "version": editor.version}
            yield {
                "jsonrpc": "2.0",
                "method": "textDocument/didChange",
                "params": {"textDocument": identifier, "contentChanges": changes},
            }
        elif kind == "bad-types":  # the whole notification is malformed: nothing of it applies
            editor.version += 1
            negative = {"start": _position(-1, 0), "end": _position(0, 0)}
            change = rng.choice([{"range": negative, "text": "x"}, {"text": 42}, "text", None])
            identifier = {"uri": URI, "version": rng.choice([editor.version, "v", None])}
            yield {
                "jsonrpc": "2.0",
                "method": "textDocument/didChange",
                "params": {"textDocument": identifier, "contentChanges": [change]},
            }
        elif kind == "inline":
            line, character = rng.choice([editor.position(rng), (10**6, 0), (0, 2**31 - 1), (-5, 3)])
            params = {
                "textDocument": {"uri": rng.choice([URI, "file:///nowhere.py", 5])},
                "position": _position(line, character),
                "context": {"triggerKind": 2},
            }
            yield {"jsonrpc": "2.0", "id": next(ids), "method": "textDocument/inlineCompletion", "params": params}
        elif kind == "unknown":
            method = rng.choice(["tandem/nothing", "$/custom", "textDocument/whatever", "\ud800"])
            yield {
                "jsonrpc": "2.0",
                "method": method,
                "params": {"x": _text(rng)},
                **({"id": next(ids)} if rng.random() < 0.5 else {}),
            }
        elif kind == "garbage":
            yield rng.choice(GARBAGE)
        elif kind == "bad-id":
            yield {
                "jsonrpc": "2.0",
                "id": rng.choice([{"a": 1}, [1], 1.5, True]),
                "method": "workspace/executeCommand",
                "params": {"command": "tandem.status"},
            }
        elif kind == "stale":  # a change whose version went back: ignored
            yield {
                "jsonrpc": "2.0",
                "method": "textDocument/didChange",
                "params": {
                    "textDocument": {"uri": URI, "version": rng.randint(-3, editor.synced)},
                    "contentChanges": [{"text": "stale"}],
                },
            }
        elif kind == "settings":
            settings = rng.choice([{"completion": {"debounceMs": "soon"}}, {"cloud": {"dailyBudgetUsd": -1}}, [], "x"])
            yield {
                "jsonrpc": "2.0",
                "method": "workspace/didChangeConfiguration",
                "params": {"settings": {"tandem": settings}},
            }
        else:
            other = (REPO / f"tandem_other_{rng.randrange(3)}.py").as_uri()
            if rng.random() < 0.5:
                yield {
                    "jsonrpc": "2.0",
                    "method": "textDocument/didOpen",
                    "params": {
                        "textDocument": {"uri": other, "languageId": "python", "version": 1, "text": _text(rng)}
                    },
                }
            else:
                yield {"jsonrpc": "2.0", "method": "textDocument/didClose", "params": {"textDocument": {"uri": other}}}


def _send(client: Client, message: dict[str, Any] | bytes) -> None:
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    client.protocol.writer.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)  # type: ignore[union-attr]


@pytest.fixture
def cloud() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


async def test_fuzzed_messages_leave_the_server_serving_and_in_step(tmp_path: Path, cloud: ScriptedServer) -> None:
    rng = random.Random(SEED)
    editor = Editor("def f(a):\n    return a\r\n\n# é 😀\n")
    env = {"OPENAI_API_KEY": "sk-test-7c2e9a41b5d84f06a3e1c9b7d2f5a8e4", "OPENAI_BASE_URL": cloud.url}
    async with serving(tmp_path, options={"completion": {"debounceMs": 2000}}, env=env) as client:
        open_doc(client, editor.text, URI)
        for message in _messages(rng, editor):
            _send(client, message)
        report = await command(client, "tandem.status")  # read after every message before it
        assert report["model"]["errors"] == 0
        assert await server_copy(client, cloud, URI, editor.text) == editor.text.rstrip("\n")
        other = (REPO / "tandem_after_fuzz.py").as_uri()
        open_doc(client, "def add(a, b):\n    return ", other)
        assert await answered(client, types.Position(1, 11), other)
