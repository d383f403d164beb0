"""Explain, debug and refactor: prompts, the routed call, and the code in the reply."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lsp_server.backends import Backend, BackendError, ChatPrompt, Generation, Usage
from lsp_server.context import CHARS_PER_TOKEN, enclosing_signatures, imports_above
from lsp_server.ledger import Entry
from lsp_server.privacy import AuditLog, Redaction, redact, restore
from lsp_server.router import Router

CLOUD_CONTEXT_CHARS = 12000
"""Characters of code and context in one cloud prompt."""
MAX_TOKENS = {"explain": 800, "debug": 1000, "refactor": 2048}
"""Most tokens generated for one reply, per task."""
_SELECTION_SHARE = 0.6
"""Of the context budget, the most the selection may take."""
LOCAL_MAX_TOKENS = {"explain": 256, "debug": 320}
"""Most tokens of a local model's explanation: a few paragraphs; a small model only repeats itself after that."""
LOCAL_TIME_S = 60.0
"""Seconds a local model's explanation may run after its first token (2 cores: about 300 tokens of a 270M model,
unloaded; a 7B model writes far fewer)."""
_ECHO_MIN = 12
"""Characters a line needs before writing it again counts as an echo (shorter ones, such as `return x`, recur in
honest replies)."""

_SYSTEM = {
    "explain": (
        "You are a senior engineer explaining code to a colleague inside their editor. "
        "Explain what the selected code does and how, then anything surprising or risky. "
        "Be concise and concrete; use Markdown."
    ),
    "debug": (
        "You are a senior engineer debugging with a colleague inside their editor. "
        "Using the diagnostics and error output, find the most likely cause of the problem in "
        "the selected code, say why it happens, and show the fix as a short code block."
    ),
    "refactor": (
        "You rewrite the selected code as instructed. Reply with exactly one fenced code block "
        "holding only the replacement for the selected code: no explanation, no code around "
        "the selection. Keep its indentation and behaviour unless told otherwise, and keep "
        "placeholders such as <<SECRET_1>> exactly as they are."
    ),
}
_ASK = {
    "explain": "Explain the selected code.",
    "debug": "Find the bug in the selected code and how to fix it.",
    "refactor": "Rewrite the selected code.",
}
# For a local model, which may be as small as the embedded 270M one: a short instruction it can follow, only the
# code it is about (surrounding code it echoes back), and the start of its reply written for it: a label, then
# words the answer begins with (without them a small model continues the prompt instead of answering it).
# Refactor keeps the full prompt: it needs the code around the selection.
_LOCAL = {
    "explain": (
        "You explain code in plain English, in two to four sentences. Never repeat the code or these instructions.",
        "Explain what this code does.",
        "Explanation: ",
        "This code",
    ),
    "debug": (
        "You find bugs in code. In two to four sentences, say what is wrong and how to fix it. "
        "Never repeat these instructions.",
        "Find the bug in this code.",
        "Answer: ",
        "The bug is",
    ),
}
# Fence tags models use for an LSP language id, first one used in prompts.
_ALIASES = {
    "python": ("python", "py", "python3"),
    "javascript": ("javascript", "js", "jsx", "node"),
    "javascriptreact": ("jsx", "javascript", "js"),
    "typescript": ("typescript", "ts"),
    "typescriptreact": ("tsx", "typescript", "ts"),
    "shellscript": ("bash", "sh", "shell", "zsh"),
    "cpp": ("cpp", "c++", "cc", "cxx"),
    "csharp": ("csharp", "cs", "c#"),
    "rust": ("rust", "rs"),
    "go": ("go", "golang"),
    "ruby": ("ruby", "rb"),
    "kotlin": ("kotlin", "kt"),
    "yaml": ("yaml", "yml"),
    "markdown": ("markdown", "md"),
}
_OPEN_FENCE = re.compile(r"[ \t]{0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*")


@dataclass(frozen=True)
class AssistRequest:
    """One explain / debug / refactor command on a selection."""

    task: str
    """explain, debug or refactor."""
    path: str
    """The file's path, for privacy rules and the prompt."""
    language_id: str
    text: str
    """The whole document."""
    start: int
    """Selection start offset into `text` (validated by the caller)."""
    end: int
    """Selection end offset into `text`."""
    instruction: str = ""
    """Refactor instruction or an extra question."""
    diagnostics: tuple[str, ...] = ()
    """"line 12: error: name 'x' is not defined" style lines."""
    error_text: str = ""
    """Stack trace or error output the user passed."""


@dataclass(frozen=True)
class AssistResult:
    """What a command produced and how it was served."""

    text: str
    """The full reply shown to the user (or why there is none)."""
    code: str | None
    """refactor: the replacement for the selection, secrets restored; else None."""
    backend: str
    model: str
    reason: str | None
    """Why the route differs from the configured one (fallback, privacy, budget)."""
    usage: Usage
    outcome: str
    """ok, cancelled, error, fallback or over_budget."""
    notes: tuple[str, ...] = ()
    """Other things to tell the user: a budget warning, which kinds of secret were redacted."""


def build_messages(req: AssistRequest, max_context_chars: int = CLOUD_CONTEXT_CHARS) -> list[dict[str, str]]:
    """System and user messages for `req`, its code and context within `max_context_chars`."""
    text, tag = req.text, _fence_tag(req.language_id)
    selection = text[req.start : req.end]
    first_line = text.count("\n", 0, req.start)
    last_line = first_line + selection.count("\n", 0, max(0, len(selection) - 1))
    limit = int(max_context_chars * _SELECTION_SHARE)
    notes = []
    if len(selection) > limit:
        notes.append(f"(The selection is {len(selection):,} characters long; only its first {limit:,} are shown.)")
        selection = selection[:limit]
    left = max_context_chars - len(selection)

    error_text = req.error_text.strip()
    if len(error_text) > left // 4:
        # The end of a trace names the failing line and the error: keep that.
        error_text = "…" + error_text[len(error_text) - left // 4 :]
    diagnostics = [d[:300] for d in req.diagnostics[:20]]
    left -= len(error_text) + sum(len(d) + 3 for d in diagnostics)

    before, window_start = _lines_before(text, req.start, max(0, left * 6 // 10))
    after = _lines_after(text, req.end, max(0, left * 2 // 10))
    left -= len(before) + len(after)
    imports = imports_above(text, window_start)
    signatures = enclosing_signatures(text, window_start, req.start)

    parts = [f"File: {req.path} (language: {req.language_id})"]
    for title, lines in (("Imports", imports), ("Enclosing definitions", signatures)):
        shown = _fit(lines, left // 2)
        left -= sum(len(line) + 1 for line in shown)
        if shown:
            parts.append(f"{title}:\n{_fenced(chr(10).join(shown), tag)}")
    if before.strip():
        parts.append(f"Code before the selection:\n{_fenced(before.lstrip(chr(10)), tag)}")
    where = f"line {first_line + 1}" if first_line == last_line else f"lines {first_line + 1}-{last_line + 1}"
    parts.append(f"Selected code ({where}):\n{_fenced(selection, tag)}" + "".join("\n" + n for n in notes))
    if after.strip():
        parts.append(f"Code after the selection:\n{_fenced(after, tag)}")
    if diagnostics:
        parts.append("Diagnostics:\n" + "\n".join(f"- {d}" for d in diagnostics))
    if error_text:
        parts.append(f"Error output:\n{_fenced(error_text, '')}")
    ask = _ASK.get(req.task, _ASK["explain"])
    if req.instruction.strip():
        label = "Instruction" if req.task == "refactor" else "Question"
        ask += f"\n{label}: {req.instruction.strip()}"
    if req.task == "refactor":
        ask += f"\nReply with only the replacement for the selected code in one ```{tag} block."
    parts.append(ask)
    return [
        {"role": "system", "content": _SYSTEM.get(req.task, _SYSTEM["explain"])},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def build_local_messages(req: AssistRequest, max_context_chars: int) -> list[dict[str, str]]:
    """Explain or debug `req` for a small local model: its short instruction, the selection (cut to a share of
    `max_context_chars`), the diagnostics and error output."""
    system, ask, _, _ = _LOCAL[req.task]
    tag = _fence_tag(req.language_id)
    selection = req.text[req.start : req.end]
    limit = int(max_context_chars * _SELECTION_SHARE)
    parts = [f"File: {req.path}\n{_fenced(selection[:limit], tag)}"]
    if req.diagnostics:
        parts.append("Diagnostics:\n" + "\n".join(f"- {d[:300]}" for d in req.diagnostics[:10]))
    if error_text := req.error_text.strip():
        left = max(0, max_context_chars - min(len(selection), limit)) // 2
        parts.append(f"Error output:\n{_fenced(error_text[len(error_text) - left :], '')}")
    if req.instruction.strip():
        parts.append(f"Question: {req.instruction.strip()}")
    # The question right under the code: after a blank line the 270M model repeats the prompt instead.
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts) + "\n" + ask}]


class EchoGuard:
    """Ends a small model's reply where it starts to echo its prompt or repeat itself: at a line that begins with a
    line of `echo`, or with one it already wrote, of at least `_ECHO_MIN` characters. Text is held back only while it
    may still become such a line, and short lines of `echo` (a code fence) until the next line shows what follows."""

    def __init__(self, echo: Iterable[str], start: str = "") -> None:
        """`start`: what the reply begins with, written into the prompt: shown with the first text after it."""
        self.stopped = False
        """Whether the reply should end: what `feed` returned is all of it."""
        lines = {line.strip() for line in echo if line.strip()}
        self._long = {line for line in lines if len(line) >= _ECHO_MIN}  # grows with the reply's own lines
        self._short = lines - self._long
        self._held: list[str] = []  # whole lines held back
        self._line = start  # the line being written
        self._shown = 0  # characters of it passed on

    def feed(self, text: str) -> str:
        """What of the reply, `text` added, can be shown now."""
        *complete, self._line = (self._line + text).split("\n")
        shown = [self._end_line(line) for line in complete if not self.stopped]
        start = self._line.strip()
        if self.stopped or self._echoes(start):
            self.stopped = True
            return "".join(shown)
        if self._shown or not (self._held or not start or any(e.startswith(start) for e in self._long | self._short)):
            shown.append(self._line[self._shown :])
            self._shown = len(self._line)
        return "".join(shown)

    def flush(self) -> str:
        """The rest, once the reply has ended by itself."""
        return "" if self.stopped else "".join(self._held) + self._line[self._shown :]

    def _echoes(self, text: str) -> bool:
        return any(text.startswith(line) for line in self._long)

    def _end_line(self, line: str) -> str:
        text, shown, self._shown = line.strip(), line[self._shown :] + "\n", 0
        if self._echoes(text):
            self.stopped = True
            return ""
        if text in self._short or (not text and self._held):
            self._held.append(shown)
            return ""
        if len(text) >= _ECHO_MIN:
            self._long.add(text)
        shown, self._held = "".join(self._held) + shown, []
        return shown


def _echo_lines(task: str, messages: list[dict[str, str]]) -> list[str]:
    """The lines of the prompt a reply must not repeat: all of them for an explanation; for a fix, which
    repeats code, the instructions only (lines outside code fences)."""
    lines = [line for m in messages for line in m["content"].split("\n")]
    if task == "explain":
        return lines
    prose, fence = [], ""
    for line in lines:
        match = _OPEN_FENCE.fullmatch(line)
        if match is not None and (not fence or match.group(1).startswith(fence)):
            fence = "" if fence else match.group(1)
        elif not fence:
            prose.append(line)
    return prose


def extract_code(reply: str, language_id: str | None = None) -> str | None:
    """The reply's code block (the largest, preferring `language_id`'s); None without one."""
    block = _pick_block(reply, language_id)
    return None if block is None else block[0]


def _pick_block(reply: str, language_id: str | None) -> tuple[str, bool] | None:
    """The chosen block's code and whether its fence was closed."""
    blocks: list[tuple[str, str, bool]] = []
    lines = reply.split("\n")
    i = 0
    while i < len(lines):
        match = _OPEN_FENCE.fullmatch(lines[i])
        i += 1
        if match is None:
            continue
        fence, info = match.group(1), match.group(2).lower()
        body: list[str] = []
        closed = False
        while i < len(lines) and not closed:
            line = lines[i].strip()
            i += 1
            closed = line.startswith(fence) and line == fence[0] * len(line)
            if not closed:
                body.append(lines[i - 1])
        blocks.append((info, "\n".join(body), closed))
    if not blocks:
        return None
    aliases = _ALIASES.get(language_id or "", (language_id or "",))
    preferred = [b for b in blocks if b[0] in aliases] or blocks
    _, code, closed = max(preferred, key=lambda b: len(b[1]))
    return code, closed


def fit_replacement(code: str, text: str, start: int, end: int) -> str:
    """`code` shaped to replace text[start:end]: its final newline, and its indentation when
    the selection starts a line (models often return the code dedented)."""
    selection = text[start:end]
    if start == 0 or text[start - 1] == "\n":
        indent = _common_indent(selection)
        have = _common_indent(code)
        if len(have) < len(indent) and indent.startswith(have):
            extra = indent[len(have) :]
            code = "\n".join(extra + line if line.strip() else line for line in code.split("\n"))
    if selection.endswith("\n") and not code.endswith("\n"):
        code += "\n"
    return code


async def run_assist(
    req: AssistRequest,
    router: Router,
    on_chunk: Callable[[str], None],
    cancel: threading.Event,
    on_notice: Callable[[str], None] | None = None,
) -> AssistResult:
    """Route `req`, stream the reply through `on_chunk`, record it; backend failures are results. `on_notice` hears
    why the route differs from the configured one before the reply starts (the result's `reason` says it again)."""
    max_tokens = MAX_TOKENS.get(req.task, MAX_TOKENS["explain"])
    if req.task == "refactor":
        # The reply repeats the whole selection, rewritten.
        max_tokens = min(4096, max(max_tokens, int(2 * (req.end - req.start) / CHARS_PER_TOKEN) + 256))
    if too_large := _too_large(req, CLOUD_CONTEXT_CHARS):
        return AssistResult(too_large, None, "none", "", None, Usage(), "error")
    shown = dataclasses.replace(req, path=_shown_path(req.path, router.root))
    # Scanning a large document for secrets and asking the ledger for today's spend take a
    # while: keep the server answering meanwhile.
    secrets, redacted = await asyncio.to_thread(_redacted, shown)
    messages = build_messages(redacted)
    route = await asyncio.to_thread(router.decide, req.task, req.path, _tokens(messages), max_tokens)
    notes: tuple[str, ...] = (route.warning,) if route.warning else ()
    reason, outcome = route.reason, str(route.outcome)
    if reason and route.backend != "none" and on_notice is not None:
        on_notice(reason)

    reply: _Reply | None = None
    if route.backend == "cloud" and router.cloud is not None:
        if secrets.kinds:
            notes += (f"Redacted before sending: {', '.join(secrets.kinds)}.",)
        prompt = ChatPrompt(messages, max_tokens)
        reply = await _ask_cloud(router.cloud, router.audit, req.path, prompt, secrets, on_chunk, cancel)
        if reply.error and not reply.parts and not cancel.is_set() and router.local is not None:
            _record(router, req.task, reply, "error")
            reason = f"The cloud failed: {reply.error}. {req.task.capitalize()} runs on the local model."
            outcome, reply = "fallback", None
            if on_notice is not None:
                on_notice(reason)
    elif route.backend == "none":
        if route.outcome == "over_budget" and router.cloud is not None:
            _record(router, req.task, _Reply(router.cloud.name, router.cloud.model), "over_budget")
        text = route.reason or "Nothing can serve this request."
        return AssistResult(text, None, "none", "", route.reason, Usage(), route.outcome, notes)
    if reply is None and router.local is not None:
        reply = await _ask_local(router.local, router.settings.context_size, shown, max_tokens, on_chunk, cancel)
        notes += (reply.cut,) if reply.cut else ()
    if reply is None:
        return AssistResult("No model can serve this request.", None, "none", "", reason, Usage(), "error", notes)

    if reply.report.cancelled:
        outcome = "cancelled"
    elif reply.error is not None:
        outcome = "error"
    _record(router, req.task, reply, outcome)
    text, usage = reply.text, reply.report.usage
    if reply.error is not None:
        text = f"{text}\n\n(The reply broke off: {reply.error}.)" if text else f"{reply.error}."
        return AssistResult(text, None, reply.backend, reply.model, reason, usage, outcome, notes)
    code = None
    if req.task == "refactor" and outcome != "cancelled":
        block = _pick_block(text, req.language_id)
        if block is None:
            text, outcome = (
                f"{text}\n\nThe reply holds no code block; nothing was changed.",
                "error",
            )
        elif not block[1] and usage.completion_tokens >= reply.max_tokens:
            cut = f"The reply was cut off at {reply.max_tokens} tokens; nothing was changed."
            text, outcome = f"{text}\n\n{cut}", "error"
        else:
            code = fit_replacement(restore(block[0], secrets), req.text, req.start, req.end)
    return AssistResult(text, code, reply.backend, reply.model, reason, usage, outcome, notes)


@dataclass
class _Reply:
    """One generation: who served it, what it streamed, how it ended."""

    backend: str
    model: str
    max_tokens: int = 0
    report: Generation = dataclasses.field(default_factory=Generation)
    parts: list[str] = dataclasses.field(default_factory=list)
    error: BackendError | None = None
    cut: str | None = None
    """Where a cap cut the reply short, for the user."""

    @property
    def text(self) -> str:
        return "".join(self.parts)

    async def collect(
        self,
        backend: Backend,
        prompt: ChatPrompt,
        on_chunk: Callable[[str], None],
        cancel: threading.Event,
        guard: EchoGuard | None = None,
        time_cap_s: float | None = None,
    ) -> _Reply:
        """Stream `backend`'s reply to `prompt`: the one path for the cloud and the local side. `guard` ends it
        at an echo, `time_cap_s` after its first chunk; either is an ending, not a cancellation."""
        stop = _Stop(cancel)
        first: float | None = None

        def show(text: str) -> None:
            if text:
                self.parts.append(text)
                on_chunk(text)

        try:
            async with contextlib.aclosing(backend.stream(prompt, stop, self.report)) as chunks:
                async for chunk in chunks:
                    show(guard.feed(chunk) if guard is not None else chunk)
                    first = first or time.monotonic()
                    if guard is not None and guard.stopped:
                        break
                    if time_cap_s is not None and time.monotonic() - first > time_cap_s:
                        self.cut = f"The local model's answer was cut at the {time_cap_s:.0f} s limit."
                        break
            if guard is not None:
                show(guard.flush())
        except BackendError as exc:
            self.error = exc
        if stop.own and not cancel.is_set():
            self.report.cancelled = False
        self.model = backend.model  # a local model's name is known once it has loaded
        return self


class _Stop(threading.Event):
    """The event a backend stops at: set by the reply's own ending (an echo, a cap), or by the user's `cancel`."""

    def __init__(self, cancel: threading.Event) -> None:
        super().__init__()
        self._cancel = cancel

    @property
    def own(self) -> bool:
        """Whether the reply ended it."""
        return super().is_set()

    def is_set(self) -> bool:
        return super().is_set() or self._cancel.is_set()


async def _ask_cloud(
    cloud: Backend,
    audit: AuditLog | None,
    path: str,
    prompt: ChatPrompt,
    secrets: Redaction,
    on_chunk: Callable[[str], None],
    cancel: threading.Event,
) -> _Reply:
    """The cloud, every request written to the audit log."""
    reply = _Reply(cloud.name, cloud.model, prompt.max_tokens)
    try:
        return await reply.collect(cloud, prompt, on_chunk, cancel)
    finally:
        if audit is not None:
            audit.write(
                cloud.model,
                path,
                len(json.dumps(prompt.messages).encode()),
                reply.report.usage.prompt_tokens,
                reply.report.usage.completion_tokens,
                secrets.kinds,
            )


async def _ask_local(
    local: Backend,
    context: int,
    req: AssistRequest,
    max_tokens: int,
    on_chunk: Callable[[str], None],
    cancel: threading.Event,
) -> _Reply:
    """The local side, with the prompt and reply cut to its context window; an explanation capped in length and
    time, and ended where the model starts echoing its prompt."""
    max_tokens = min(LOCAL_MAX_TOKENS.get(req.task, max_tokens), context // 3)
    # Code runs about three characters a token; two leaves room for the template and the reply.
    context_chars = min(CLOUD_CONTEXT_CHARS, (context - max_tokens) * 2)
    reply = _Reply(local.name, local.model, max_tokens)
    if too_large := _too_large(req, context_chars):
        reply.error = BackendError(too_large.rstrip("."))
        return reply
    if req.task not in _LOCAL:
        return await reply.collect(local, ChatPrompt(build_messages(req, context_chars), max_tokens), on_chunk, cancel)
    messages = build_local_messages(req, context_chars)
    *_, label, opening = _LOCAL[req.task]
    prompt = ChatPrompt(messages, max_tokens, reply_start=label + opening)
    guard = EchoGuard(_echo_lines(req.task, messages), opening)
    await reply.collect(local, prompt, on_chunk, cancel, guard, LOCAL_TIME_S)
    if reply.cut is None and reply.report.usage.completion_tokens >= max_tokens:
        reply.cut = f"The local model's answer was cut at the {max_tokens}-token limit."
    return reply


def _too_large(req: AssistRequest, context_chars: int) -> str | None:
    """Why a refactor cannot be done in one request: its selection would be cut."""
    limit = int(context_chars * _SELECTION_SHARE)
    if req.task != "refactor" or req.end - req.start <= limit:
        return None
    return (
        f"The selection is too large to refactor in one request ({req.end - req.start:,} "
        f"characters; at most {limit:,})."
    )


def _redacted(req: AssistRequest) -> tuple[Redaction, AssistRequest]:
    """`req` with every secret replaced, the selection offsets moved to match."""
    document = redact(req.text)
    secrets = redact(req.instruction, document)
    instruction = secrets.text
    diagnostics = []
    for line in req.diagnostics:
        secrets = redact(line, secrets)
        diagnostics.append(secrets.text)
    secrets = redact(req.error_text, secrets)
    return secrets, dataclasses.replace(
        req,
        text=document.text,
        start=document.map_offset(req.start),
        end=document.map_offset(req.end, end=True),
        instruction=instruction,
        diagnostics=tuple(diagnostics),
        error_text=secrets.text,
    )


def _record(router: Router, task: str, reply: _Reply, outcome: str) -> None:
    if router.ledger is not None:
        router.ledger.record(Entry.of(task, reply.backend, reply.model, reply.report, outcome, router.root or ""))


def _tokens(messages: list[dict[str, str]]) -> int:
    return int(sum(len(m["content"]) for m in messages) / CHARS_PER_TOKEN) + 4 * len(messages)


def _shown_path(path: str, root: str | None) -> str:
    """The path as the prompt shows it: workspace-relative, else just the file name."""
    if root is not None:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
        if not rel.startswith(os.pardir):
            return rel
    return os.path.basename(path)


def _fence_tag(language_id: str) -> str:
    return _ALIASES.get(language_id, (language_id,))[0]


def _fenced(code: str, tag: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{tag}\n{code.rstrip(chr(10))}\n{fence}"


def _lines_before(text: str, pos: int, budget: int) -> tuple[str, int]:
    """Whole lines before `pos` (and the start of its line) within `budget`, and their start."""
    start = text.rfind("\n", 0, pos) + 1
    while start > 0:
        previous = text.rfind("\n", 0, start - 1) + 1
        if pos - previous > budget:
            break
        start = previous
    return text[start:pos], start


def _lines_after(text: str, pos: int, budget: int) -> str:
    """The rest of `pos`'s line and whole lines after it, within `budget`."""
    end = text.find("\n", pos)
    end = len(text) if end == -1 else end
    while end < len(text):
        following = text.find("\n", end + 1)
        following = len(text) if following == -1 else following
        if following - pos > budget:
            break
        end = following
    return text[pos:end]


def _fit(lines: list[str], budget: int) -> list[str]:
    shown: list[str] = []
    for line in lines:
        budget -= len(line) + 1
        if budget < 0:
            break
        shown.append(line)
    return shown


def _common_indent(code: str) -> str:
    indents = [line[: len(line) - len(line.lstrip())] for line in code.split("\n") if line.strip()]
    return min(indents, key=len) if indents else ""
