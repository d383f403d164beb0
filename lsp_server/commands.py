"""Explain / debug / refactor as commands: their argument object checked, and the code actions that offer them.

Plain data in and out (positions as (line, character) pairs); the LSP layer converts.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from lsp_server.assist import AssistRequest, AssistResult
from lsp_server.documents import Document, PositionError, offset_at, span_at, units

DEFAULT_INSTRUCTION = "Make this code clearer and simpler without changing what it does."
"""The refactor instruction when the client sends none (a code action does not ask)."""

Position = tuple[int, int]
"""(line, character) in the negotiated position encoding."""
Span = tuple[Position, Position]


class BadArguments(ValueError):
    """A command's arguments are wrong; the message says how (the client gets InvalidParams)."""


@dataclass(frozen=True)
class AssistArgs:
    """The argument object of tandem.explain / debug / refactor, validated."""

    uri: str
    span: Span
    instruction: str
    error_text: str
    diagnostics: tuple[str, ...]
    id: str | int
    apply: bool


@dataclass(frozen=True)
class Offer:
    """A code action that runs a command on a range."""

    title: str
    command: str
    kind: str
    """An LSP CodeActionKind value: refactor, refactor.rewrite or quickfix."""
    argument: dict[str, Any]


def assist_args(task: str, args: Sequence[Any]) -> AssistArgs:
    """The command's one argument object; BadArguments says what is wrong with it."""
    usage = f'tandem.{task} takes one argument {{"uri", "range": {{"start", "end"}}, "instruction"?}}'
    if len(args) != 1 or not isinstance(args[0], Mapping):
        raise BadArguments(usage)
    arg = args[0]
    uri = arg.get("uri")
    if not isinstance(uri, str):
        raise BadArguments(f"{usage}: uri must be a string")
    rng = arg.get("range")
    start, end = (_position(rng.get(k)) if isinstance(rng, Mapping) else None for k in ("start", "end"))
    if start is None or end is None:
        raise BadArguments(f"{usage}: range needs start and end positions {{line, character}}")
    optional_strings = {key: arg.get(key, "") for key in ("instruction", "errorText")}
    diagnostics = arg.get("diagnostics", [])
    if any(not isinstance(v, str) for v in optional_strings.values()) or not (
        isinstance(diagnostics, list) and all(isinstance(d, str) for d in diagnostics)
    ):
        raise BadArguments(f"{usage}: instruction and errorText are strings, diagnostics a list of strings")
    request_id = arg.get("id", uuid.uuid4().hex[:12])
    apply = arg.get("apply", True)
    if isinstance(request_id, bool) or not isinstance(request_id, (str, int)) or not isinstance(apply, bool):
        raise BadArguments(f"{usage}: id is a string or number, apply true or false")
    return AssistArgs(
        uri=uri,
        span=(start, end),
        instruction=optional_strings["instruction"],
        error_text=optional_strings["errorText"],
        diagnostics=tuple(diagnostics),
        id=request_id,
        apply=apply,
    )


def assist_request(task: str, arg: AssistArgs, doc: Document, path: str, encoding: str) -> AssistRequest:
    """The domain request for `arg` on the document as the command saw it (its file at `path`)."""
    try:
        start, end = span_at(doc.text, arg.span[0], arg.span[1], encoding)
    except PositionError as exc:
        raise BadArguments(f"the range is outside {arg.uri}: {exc}") from exc
    if end < start:
        raise BadArguments(f"the range ends before it starts in {arg.uri}")
    return AssistRequest(
        task=task,
        path=path,
        language_id=doc.language_id,
        text=doc.text,
        start=start,
        end=end,
        instruction=arg.instruction or (DEFAULT_INSTRUCTION if task == "refactor" else ""),
        diagnostics=arg.diagnostics,
        error_text=arg.error_text,
    )


def answer(arg: AssistArgs, result: AssistResult, applied: bool | None, why_not: str | None = None) -> dict[str, Any]:
    """The command's result object: the reply, how it was served, and whether its edit was applied (None: it
    had none; `why_not` says why it was not)."""
    notes = [*result.notes, *([f"The edit was not applied: {why_not}."] if why_not else [])]
    return {
        "id": arg.id,
        "text": result.text,
        "code": result.code,
        "backend": result.backend,
        "model": result.model,
        "reason": result.reason,
        "outcome": result.outcome,
        "notes": notes,
        "applied": applied,
        "usage": {
            "promptTokens": result.usage.prompt_tokens,
            "completionTokens": result.usage.completion_tokens,
            "estimated": result.usage.estimated,
        },
    }


def code_actions(
    doc: Document, selection: Span, diagnostics: Sequence[tuple[Span, str]], only: Sequence[str], encoding: str
) -> list[Offer]:
    """Explain and Refactor on a selection; Debug on diagnostics (their span and prompt line); only the kinds
    in `only` when it names any."""
    offered: list[Offer] = []
    argument = {"uri": doc.uri, "range": _range_json(selection)}
    if selection[0] != selection[1]:
        offered.append(Offer("tandem: Explain", "tandem.explain", "refactor", argument))
        offered.append(Offer("tandem: Refactor…", "tandem.refactor", "refactor.rewrite", argument))
    if diagnostics:
        target = selection
        if selection[0] == selection[1]:
            target = _lines_of(doc.text, [span for span, _ in diagnostics], encoding) or selection
        debug = {"uri": doc.uri, "range": _range_json(target), "diagnostics": [line for _, line in diagnostics]}
        offered.append(Offer("tandem: Debug", "tandem.debug", "quickfix", debug))
    return [o for o in offered if not only or any(o.kind == want or o.kind.startswith(f"{want}.") for want in only)]


def _range_json(span: Span) -> dict[str, Any]:
    (start_line, start_character), (end_line, end_character) = span
    return {
        "start": {"line": start_line, "character": start_character},
        "end": {"line": end_line, "character": end_character},
    }


def _lines_of(text: str, spans: Sequence[Span], encoding: str) -> Span | None:
    """The whole lines the spans cover, or None when one lies outside the document."""
    first = min(start[0] for start, _ in spans)
    last = max(end[0] for _, end in spans)
    try:
        start, end = offset_at(text, last, 0, encoding), offset_at(text, last, 2**31, encoding)
        offset_at(text, first, 0, encoding)
    except PositionError:
        return None
    return (first, 0), (last, units(text[start:end], encoding))


def _position(value: Any) -> Position | None:
    if not isinstance(value, Mapping):
        return None
    line, character = value.get("line"), value.get("character")
    if not (_natural(line) and _natural(character)):
        return None
    return line, character


def _natural(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
