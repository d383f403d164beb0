"""`pull` against a real HTTP server on 127.0.0.1 serving the embedded model, with Range support."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from lsp_server.models.cards import Card, Quant
from lsp_server.models.store import PullError, checksum_path, partial_path, pull
from tests.loopback import _Handler, embedded_model, free_port

CUT_AT = 50 * 2**20


class FileServer:
    """Serves one file: `/etag/` states its sha256 as ETag, `/plain/` states none, `/hf/` redirects the way
    Hugging Face does (X-Linked-Etag on the redirect), `/cut/` drops the first transfer after CUT_AT bytes."""

    def __init__(self, path: Path) -> None:
        self.data = path.read_bytes()
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.linked_etag = self.sha256
        self.ranges: list[str | None] = []
        self.sent = 0
        self.cut_pending = True
        server = self

        class Handler(_Handler):
            def do_GET(self) -> None:
                mode = self.path.split("/")[1]
                if not self.path.endswith("/model.gguf") or mode not in ("etag", "plain", "hf", "cdn", "cut"):
                    self.send_error(404)
                    return
                if mode == "hf":
                    self.send_response(302)
                    self.send_header("Location", "/cdn/model.gguf")
                    self.send_header("X-Linked-Etag", f'"{server.linked_etag}"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                server.ranges.append(self.headers.get("Range"))
                start = 0
                if (spec := self.headers.get("Range")) is not None:
                    start = int(spec.removeprefix("bytes=").rstrip("-"))
                body = server.data[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.data) - 1}/{len(server.data)}")
                self.send_header("Content-Length", str(len(body)))
                if mode in ("etag", "cut"):
                    self.send_header("ETag", f'"{server.sha256}"')
                self.end_headers()
                if mode == "cut" and server.cut_pending:
                    server.cut_pending = False
                    body = body[:CUT_AT]  # the connection drops mid-transfer
                self.wfile.write(body)
                server.sent += len(body)

        self.http = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[FileServer]:
    files = FileServer(embedded_model())
    yield files
    files.close()


def _card(*urls: str, sha256: str | None = None) -> tuple[Card, Quant]:
    quant = Quant(name="Q4_K_M", file="gemma.gguf", size=300 * 2**20, urls=urls, sha256=sha256)
    card = Card("gemma-test", "Gemma", "gemma3", ("completion",), "270M", 32768, "Gemma", (quant,))
    return card, quant


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_pull_verifies_the_servers_checksum(server: FileServer, tmp_path: Path) -> None:
    card, quant = _card(f"{server.url}/etag/model.gguf")
    seen: list[tuple[int, int | None]] = []
    path = pull(card, quant, tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "gemma.gguf"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == server.sha256
    assert checksum_path(path).read_text().strip() == server.sha256  # for `verify` later
    assert _left(tmp_path) == ["gemma.gguf", "gemma.gguf.sha256"]
    assert seen[-1] == (len(server.data), len(server.data))
    requests = len(server.ranges)
    assert pull(card, quant, tmp_path) == path  # already there: no second download
    assert len(server.ranges) == requests


def test_interrupted_transfer_resumes_where_it_stopped(server: FileServer, tmp_path: Path) -> None:
    card, quant = _card(f"{server.url}/cut/model.gguf")
    server.cut_pending, server.ranges = True, []
    with pytest.raises(PullError, match="run the same pull again to resume"):
        pull(card, quant, tmp_path)
    partial = partial_path(tmp_path / "gemma.gguf")
    assert partial.stat().st_size == CUT_AT
    assert _left(tmp_path) == ["gemma.gguf.partial"]  # never under the model's own name

    sent_before = server.sent
    path = pull(card, quant, tmp_path)
    assert server.ranges == [None, f"bytes={CUT_AT}-"]
    assert server.sent - sent_before == len(server.data) - CUT_AT
    assert hashlib.sha256(path.read_bytes()).hexdigest() == server.sha256
    assert not partial.exists()


def test_checksum_mismatch_leaves_nothing(server: FileServer, tmp_path: Path) -> None:
    card, quant = _card(f"{server.url}/etag/model.gguf", sha256="0" * 64)
    with pytest.raises(PullError, match=f"checksum mismatch .* expected {'0' * 64}, got {server.sha256}"):
        pull(card, quant, tmp_path)
    assert _left(tmp_path) == []


def test_hugging_face_redirect_checksum(server: FileServer, tmp_path: Path) -> None:
    card, quant = _card(f"{server.url}/hf/model.gguf")
    assert hashlib.sha256(pull(card, quant, tmp_path / "ok").read_bytes()).hexdigest() == server.sha256
    server.linked_etag = "f" * 64
    try:
        with pytest.raises(PullError, match="checksum mismatch"):
            pull(card, quant, tmp_path / "bad")
    finally:
        server.linked_etag = server.sha256
    assert _left(tmp_path / "bad") == []


def test_no_checksum_anywhere_is_refused_unless_told(server: FileServer, tmp_path: Path) -> None:
    card, quant = _card(f"{server.url}/plain/model.gguf")
    sent = server.sent
    with pytest.raises(PullError, match="--no-verify"):
        pull(card, quant, tmp_path)
    assert _left(tmp_path) == []
    assert server.sent == sent  # refused before the body was read
    path = pull(card, quant, tmp_path, verify=False)
    assert path.read_bytes() == server.data
    assert _left(tmp_path) == ["gemma.gguf"]


def test_not_found(server: FileServer, tmp_path: Path) -> None:
    card, quant = _card(f"{server.url}/etag/missing.gguf")
    with pytest.raises(PullError, match="HTTP 404"):
        pull(card, quant, tmp_path)
    assert _left(tmp_path) == []


def test_offline(tmp_path: Path) -> None:
    card, quant = _card(f"http://127.0.0.1:{free_port()}/model.gguf")  # nobody listens: connection refused
    with pytest.raises(PullError, match=r"cannot reach 127\.0\.0\.1:\d+ .*offline"):
        pull(card, quant, tmp_path)
    assert _left(tmp_path) == []


def test_next_url_is_tried_when_the_first_fails(server: FileServer, tmp_path: Path) -> None:
    card, quant = _card(f"{server.url}/etag/missing.gguf", f"{server.url}/etag/model.gguf")
    assert pull(card, quant, tmp_path).read_bytes() == server.data


def _damaged(model: bytes, damage: str) -> bytes:
    if damage == "not-gguf":
        return b"not a model at all" * 1000
    if damage == "truncated":
        return model[: len(model) // 2]
    return model[:4] + (999).to_bytes(4, "little") + model[8:]  # a version llama.cpp here cannot load


@pytest.mark.parametrize(
    ("damage", "said"),
    [("not-gguf", "not a GGUF model file"), ("truncated", "truncated"), ("unknown-version", "GGUF version 999")],
)
def test_a_download_that_is_not_a_usable_gguf_is_removed(damage: str, said: str, tmp_path: Path) -> None:
    """Its checksum matches what the server states: the GGUF check is what stops it. Before: a truncated file or
    one of an unknown version was kept, with no word."""
    served = tmp_path / "src" / "model.gguf"
    served.parent.mkdir()
    served.write_bytes(_damaged(embedded_model().read_bytes(), damage))
    files = FileServer(served)
    try:
        card, quant = _card(f"{files.url}/etag/model.gguf")
        with pytest.raises(PullError, match=f"not a usable GGUF .*{said}.*it was removed"):
            pull(card, quant, tmp_path / "models")
        assert _left(tmp_path / "models") == []
    finally:
        files.close()
