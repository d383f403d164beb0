"""Explain, debug and refactor: prompts, the routed call, and the code in the reply."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import threading
from collections.abc import Callable
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
    req: AssistRequest, router: Router, on_chunk: Callable[[str], None], cancel: threading.Event
) -> AssistResult:
    """Route `req`, stream the reply through `on_chunk`, record it; backend failures are results."""
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

    reply: _Reply | None = None
    if route.backend == "cloud" and router.cloud is not None:
        if secrets.kinds:
            notes += (f"Redacted before sending: {', '.join(secrets.kinds)}.",)
        prompt = ChatPrompt(messages, max_tokens)
        reply = await _ask_cloud(router.cloud, router.audit, req.path, prompt, secrets, on_chunk, cancel)
        if reply.error and not reply.parts and not cancel.is_set() and router.local is not None:
            _record(router, req.task, reply, "error")
            reason = f"The cloud failed: {reply.error}. {req.task.capitalize()} ran on the local model."
            outcome, reply = "fallback", None
    elif route.backend == "none":
        if route.outcome == "over_budget" and router.cloud is not None:
            _record(router, req.task, _Reply(router.cloud.name, router.cloud.model), "over_budget")
        text = route.reason or "Nothing can serve this request."
        return AssistResult(text, None, "none", "", route.reason, Usage(), route.outcome, notes)
    if reply is None and router.local is not None:
        reply = await _ask_local(router.local, router.settings.context_size, shown, max_tokens, on_chunk, cancel)
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

    @property
    def text(self) -> str:
        return "".join(self.parts)

    async def collect(
        self, backend: Backend, prompt: ChatPrompt, on_chunk: Callable[[str], None], cancel: threading.Event
    ) -> _Reply:
        """Stream `backend`'s reply to `prompt`: the one path for the cloud and the local side."""
        try:
            async for chunk in backend.stream(prompt, cancel, self.report):
                self.parts.append(chunk)
                on_chunk(chunk)
        except BackendError as exc:
            self.error = exc
        self.model = backend.model  # a local model's name is known once it has loaded
        return self


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
    """The local side, with the prompt and reply cut to its context window."""
    max_tokens = min(max_tokens, context // 3)
    # Code runs about three characters a token; two leaves room for the template and the reply.
    context_chars = min(CLOUD_CONTEXT_CHARS, (context - max_tokens) * 2)
    reply = _Reply(local.name, local.model, max_tokens)
    if too_large := _too_large(req, context_chars):
        reply.error = BackendError(too_large.rstrip("."))
        return reply
    return await reply.collect(local, ChatPrompt(build_messages(req, context_chars), max_tokens), on_chunk, cancel)


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
