"""The peer: llama.cpp's llama-server on loopback, asked the way llama.vscode asks it, one request per pause.

llama.vscode (src/llama-server.ts, src/completion.ts) sends `/infill` with `input_prefix` (up to 256
lines before the cursor's line), `prompt` (the cursor's line up to the cursor), `input_suffix` (the rest
of the line and up to 64 lines after), `input_extra` (ring-buffer chunks; none here), `n_predict`,
`n_indent`, `cache_prompt: true`, `t_max_prompt_ms: 500`, `t_max_predict_ms: 2500`. A model without
FIM tokens gets `/completion` with the same text as one prompt. The file's prompt is warmed when it is
opened (`n_predict: 0`), as llama.vscode's ring-buffer updates and llama.vim do.

Where this differs from llama.vscode, it is in the peer's favour or for a like-for-like count:
- one request, the moment typing stops. llama.vscode answers VS Code's inline-completion calls, which VS
  Code makes while the user types (after its own short debounce); its requests run one at a time, so the
  request for a pause often waits for one sent during the burst;
- no request for the suggestion as if accepted (`cacheFutureSuggestion`), which llama.vscode sends after
  each answer: its CPU would count on the peer's side;
- the peer streams (llama.vscode waits for the whole answer, so its first ghost text is its full
  suggestion), and samples greedily with tandem's token cap and single-line stop, so that both sides
  generate the same text and only time and work differ.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsp_server.completion.engine import Context
from lsp_server.tools.session import now_ms
from tests.loopback import free_port

ROOT = Path(__file__).resolve().parent.parent
N_PREFIX_LINES = 256
N_SUFFIX_LINES = 64


@dataclass
class PeerPause:
    """One pause answered by llama-server."""

    first_ms: float
    full_ms: float
    text: str
    prompt_n: int
    predicted_n: int


def build(python: str) -> Path:
    """The llama-server binary, built once from llama-cpp-python's vendored llama.cpp (minutes the first time)."""
    script = ROOT / "scripts" / "build-llama-server.sh"
    out = subprocess.run(["bash", str(script), python], cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    return ROOT / out.stdout.strip().splitlines()[-1]


class LlamaServer:
    """A llama-server process on loopback, started as llama.vscode's README has its users start it on a CPU
    (`-ub 1024 -b 1024 --cache-reuse 256`), everything else at llama-server's own defaults: threads (all
    physical cores, to decode and to evaluate prompts), flash attention, slots. Only the context size is
    tandem's, so that the memory rows compare like with like (it does not change the speed)."""

    def __init__(self, binary: Path, model: str, settings: Any, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        args = [str(binary), "-m", model, "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["-c", str(settings.context_size), "-ub", "1024", "-b", "1024", "--cache-reuse", "256", "--no-webui"]
        layers = settings.n_gpu_layers
        args += ["-ngl", str(999 if layers is None or layers < 0 else layers)]
        self._log = log.open("ab")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)

    def threads(self) -> str:
        """The threads llama-server chose, as its log says (`llama threadpool init, n_threads = 2`)."""
        found = re.findall(r"threadpool init, n_threads = (\d+)", self.log.read_text("utf-8", "replace"))
        if not found:
            return "threads: see its log"
        return f"-t {found[0]} (its default: the physical cores; -tb the same), -ub 1024 -b 1024 --cache-reuse 256"

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Block until the model is loaded."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("llama-server did not become ready")

    def rss_bytes(self) -> int:
        """Resident memory of the server process."""
        return rss_bytes(self.process.pid)

    def stop(self) -> None:
        """Stop the process."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def request_body(text: str, cursor: int, fim: bool, max_tokens: int, multiline: str) -> tuple[str, dict[str, Any]]:
    """The endpoint and JSON body llama.vscode would send for `cursor` in `text` (see the module docstring)."""
    line_start = text.rfind("\n", 0, cursor) + 1
    line_end = text.find("\n", cursor)
    line_end = len(text) if line_end < 0 else line_end
    before = text[:line_start].split("\n")[:-1][-N_PREFIX_LINES:]
    after = text[line_end + 1 :].split("\n")[:N_SUFFIX_LINES]
    line = text[line_start:line_end]
    prompt = text[line_start:cursor]
    ctx = Context.at(text, cursor, multiline)
    body: dict[str, Any] = {
        "n_predict": max_tokens,
        "cache_prompt": True,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 2500,
        "n_indent": len(line) - len(line.lstrip()),
        "top_k": 1,
        "stream": True,
    }
    if not ctx.multiline:
        body["stop"] = ["\n"]
    input_prefix = "\n".join(before) + "\n" if before else ""
    if fim:
        body |= {
            "input_prefix": input_prefix,
            "prompt": prompt,
            "input_suffix": text[cursor:line_end] + "\n" + "\n".join(after) + "\n",
            "input_extra": [],
        }
        return "/infill", body
    body["prompt"] = input_prefix + prompt
    return "/completion", body


def complete(url: str, path: str, body: dict[str, Any]) -> PeerPause:
    """One streamed request; time to the first finished line and to the end, and the server's token counts."""
    started = now_ms()
    request = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    text = ""
    first: float | None = None
    timings: dict[str, Any] = {}
    with urllib.request.urlopen(request, timeout=120) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            text += event.get("content", "")
            if first is None and "\n" in text.lstrip("\n"):
                first = now_ms() - started
            if event.get("stop"):
                timings = event.get("timings", {})
                break
    full = now_ms() - started
    return PeerPause(
        first_ms=full if first is None else first,
        full_ms=full,
        text=text,
        prompt_n=int(timings.get("prompt_n", 0)),
        predicted_n=int(timings.get("predicted_n", 0)),
    )


def replay(
    binary: Path, model: str, fim: bool, opening: str, bursts: list[str], settings: Any, log: Path
) -> tuple[list[PeerPause], int]:
    """Type the bursts (no keystrokes reach it: one request per pause, sent the moment typing stops)."""
    server = LlamaServer(binary, model, settings, log)
    try:
        server.wait_ready()
        text = opening
        pauses = []
        for burst in bursts:
            text += burst
            path, body = request_body(text, len(text), fim, settings.max_tokens, settings.multiline)
            pauses.append(complete(server.url, path, body))
        return pauses, server.rss_bytes()
    finally:
        server.stop()
