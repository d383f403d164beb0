"""FIM templates and KV-cache-friendly prompt windows for inline completion."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from lsp_server.backends import Infill
from lsp_server.context import CHARS_PER_TOKEN, definitions, enclosing_signatures, imports_above
from lsp_server.models.cards import Repo, flat_name, load_cards
from lsp_server.recent import Chunk


@dataclass(frozen=True)
class FimTemplate:
    """How one model family lays out a fill-in-the-middle prompt."""

    family: str
    """Family name, or "gguf" when the markers were read from the model's metadata."""
    prefix: str
    """Marker before the text preceding the cursor."""
    suffix: str
    """Marker before the text following the cursor."""
    middle: str
    """Marker after which the model writes the middle; empty for families without one."""
    suffix_first: bool = False
    """SPM layout: the suffix block comes before the prefix block."""
    stop: tuple[str, ...] = ()
    """Strings the family emits once the middle is done."""
    repo: Repo | None = None
    """Repository-level format (file separators) for other files' code; None: they go in comments."""


def _families_from_cards() -> tuple[dict[str, FimTemplate], tuple[tuple[str, re.Pattern[str]], ...]]:
    families: dict[str, FimTemplate] = {}
    rules: list[tuple[str, re.Pattern[str]]] = []
    for card in load_cards():
        fim = card.fim
        if fim is None or card.family in families:
            continue
        families[card.family] = FimTemplate(
            card.family,
            fim.prefix,
            fim.suffix,
            fim.middle,
            suffix_first=fim.order == "suffix-first",
            stop=fim.stop,
            repo=card.repo,
        )
        rules.extend((card.family, re.compile(pattern)) for pattern in fim.names)
    return families, tuple(rules)


# The FIM formats of the model cards (models/*.toml), for GGUFs without `fim_*` metadata.
# Name patterns match names lower-cased without punctuation: "Qwen2.5-Coder-7B" -> "qwen25coder7b".
FAMILIES, _NAME_RULES = _families_from_cards()
_NAME_KEYS = ("general.basename", "general.name", "general.architecture")
_STOP_KEYS = ("eos", "eot", "fim_pad", "fim_rep", "fim_sep")


def _guess_family(names: list[str]) -> FimTemplate | None:
    for name in names:
        flat = flat_name(name)
        for family, pattern in _NAME_RULES:
            if pattern.search(flat):
                return FAMILIES[family]
    return None


def template_from_gguf(
    metadata: Mapping[str, str], token_text: Callable[[int], str], model_name: str
) -> FimTemplate | None:
    """FIM template from GGUF `fim_*_token_id` metadata, else guessed from names; None: no FIM."""
    guess = _guess_family([metadata[k] for k in _NAME_KEYS if k in metadata] + [model_name])
    marker_keys = [f"tokenizer.ggml.fim_{k}_token_id" for k in ("pre", "suf", "mid")]
    if not all(k in metadata for k in marker_keys):
        return guess
    pre, suf, mid = (token_text(int(metadata[k])) for k in marker_keys)
    stop_keys = [f"tokenizer.ggml.{k}_token_id" for k in _STOP_KEYS]
    stops = [token_text(int(metadata[k])) for k in stop_keys if k in metadata]
    if guess is None:
        return FimTemplate(
            "gguf", pre, suf, mid, stop=tuple(dict.fromkeys(stops)), repo=_repo_from_gguf(metadata, token_text)
        )
    # The metadata names the markers; the family knows the order it was trained with.
    return replace(
        guess,
        family="gguf",
        prefix=pre,
        suffix=suf,
        middle=mid if guess.middle else "",
        stop=tuple(dict.fromkeys([*guess.stop, *stops])),
    )


def _repo_from_gguf(metadata: Mapping[str, str], token_text: Callable[[int], str]) -> Repo | None:
    """The layout llama.cpp's server gives `input_extra` for a model whose metadata names a file separator."""
    if "tokenizer.ggml.fim_sep_token_id" not in metadata:
        return None
    sep = token_text(int(metadata["tokenizer.ggml.fim_sep_token_id"]))
    rep_key = "tokenizer.ggml.fim_rep_token_id"
    name = token_text(int(metadata[rep_key])) + "{name}\n" if rep_key in metadata else ""
    return Repo(name=name, file=sep + "{path}\n{code}", current=sep + "{path}\n")


def marker_problems(template: FimTemplate, tokenize: Callable[[str], list[int]]) -> list[str]:
    """One human-readable line per FIM marker that does not tokenize to exactly one token."""
    problems = []
    for role, marker in (
        ("prefix", template.prefix),
        ("suffix", template.suffix),
        ("middle", template.middle),
    ):
        if not marker:
            continue
        ids = tokenize(marker)
        if len(ids) != 1:
            problems.append(
                f"{template.family} {role} marker {marker!r} is {len(ids)} tokens, not one:"
                " the model's vocabulary lacks it, so fill-in-the-middle will not work"
            )
    return problems


@dataclass(frozen=True)
class Prompt:
    """A completion prompt and the part of the document it covers."""

    text: str
    """The prompt; markers appear as text, to be tokenized with special tokens parsed."""
    prefix_start: int
    """Document offset where the prompt's prefix begins."""
    suffix_end: int
    """Document offset where the prompt's suffix ends (the cursor when there is no suffix)."""
    infill: Infill
    """The same prompt in parts, without markers."""


def _suffix_window(text: str, cursor: int, budget: int) -> str:
    window = text[cursor : cursor + budget]
    if cursor + budget >= len(text):
        return window
    cut = window.rfind("\n")
    return window[: cut + 1] if cut >= 0 else window


def _prefix_start(text: str, cursor: int, budget: int) -> int:
    if cursor <= budget:
        return 0
    # Snap the start to a coarse grid so it stays put while the user types at the
    # cursor: llama.cpp reuses the KV cache only for the common leading tokens.
    step = max(1, budget // 2)
    start = -(-(cursor - budget) // step) * step
    newline = text.find("\n", start - 1, cursor)
    if newline < 0 or newline + 1 == cursor:
        # A line longer than the budget: cut it mid-line rather than send no prefix.
        return start
    return newline + 1


def build_prompt(
    text: str,
    cursor: int,
    template: FimTemplate | None,
    budget_tokens: int,
    others: Sequence[tuple[str, str]] = (),
    recent: Sequence[tuple[str, Chunk]] = (),
    path: str = "",
    repo_name: str = "",
) -> Prompt:
    """The prompt for `cursor` in `text`: about `budget_tokens` of context and document plus the markers.

    `others` are the other open documents as (uri, text): definitions from them may join the context.
    `recent` are chunks of recent edits as (path, chunk), oldest first: they open the prompt, in the
    model's repository-level format (`path` names the current file, `repo_name` the workspace) or as
    comments, within a quarter of the budget. They change only when the ring does, so the KV cache
    of everything after them is reused while the user types.
    """
    budget = int(budget_tokens * CHARS_PER_TOKEN)
    repo = template.repo if template is not None else None
    extra = recent_block(recent, repo, path, repo_name, budget // 4)
    budget -= len(extra)
    suffix = "" if template is None else _suffix_window(text, cursor, budget // 4)
    start = _prefix_start(text, cursor, budget - len(suffix))
    header = ""
    if start > 0 or others:
        # Context may go before the window: make room for it, at most an eighth, if there is some.
        reserved = _prefix_start(text, cursor, budget - len(suffix) - budget // 8)
        header = context_header(text, reserved, cursor, others, budget // 8)
        if header:
            start = reserved
    prefix = header + text[start:cursor]
    if repo is None:
        prefix = extra + prefix
    if template is None:
        body = prefix
    elif template.suffix_first:
        body = f"{template.suffix}{suffix}{template.prefix}{prefix}{template.middle}"
    else:
        body = f"{template.prefix}{prefix}{template.suffix}{suffix}{template.middle}"
    if repo is not None:
        body = extra + body
    # llama-server's /infill lays out the chunks itself (`input_extra`): its prefix goes without them.
    infill = Infill(header + text[start:cursor], suffix, tuple((p, chunk.text) for p, chunk in recent))
    return Prompt(body, start, cursor + len(suffix), infill)


def recent_block(recent: Sequence[tuple[str, Chunk]], repo: Repo | None, path: str, repo_name: str, budget: int) -> str:
    """The newest chunks that fit `budget` characters, oldest first: as other files of the repository when the
    model has file separators, else as comment lines naming their file; "" when there are none."""
    if not recent:
        return ""
    if repo is not None:
        opening = repo.name.format(name=repo_name) if repo.name and repo_name else ""
        closing = repo.current.format(path=path)
        parts = [repo.file.format(path=p, code=chunk.text) for p, chunk in recent]
    else:
        opening = closing = ""
        parts = [
            f"# {p} (edited):\n" + "".join(f"# {line}\n" for line in chunk.text.splitlines()) for p, chunk in recent
        ]
    room = budget - len(opening) - len(closing)
    chosen: list[str] = []
    for part in reversed(parts):
        if len(part) > room:
            if not chosen:  # the newest alone is too long: its first lines, which hold the edit
                chosen.append(part[: part.rfind("\n", 0, room) + 1])
            break
        chosen.append(part)
        room -= len(part)
    kept = "".join(reversed([p for p in chosen if p]))
    return opening + kept + closing if kept else ""


_IDENTIFIER = re.compile(r"[A-Za-z_]\w{2,}")


def definitions_in(others: Sequence[tuple[str, str]], names: set[str], budget: int) -> str:
    """Signatures of `names` defined in other open documents, as comment lines naming their file."""
    blocks = []
    used = 0
    for uri, text in others:
        found = [signature for name, signature in definitions(text) if name in names]
        if not found:
            continue
        block = f"# {uri.rsplit('/', 1)[-1]}:\n" + "".join(
            f"# {line.strip()}\n" for signature in found for line in signature.split("\n")
        )
        if used + len(block) > budget:
            break
        blocks.append(block)
        used += len(block)
    return "".join(blocks)


def context_header(text: str, start: int, cursor: int, others: Sequence[tuple[str, str]], budget: int) -> str:
    """What goes before the window: other files' definitions of names used near the cursor, the
    file's imports and the signatures enclosing the window. Depends on the window's start and on the
    lines before the cursor's line only, so it stays byte-identical while the user types on a line."""
    header = ""
    if others:
        line_start = text.rfind("\n", 0, cursor) + 1
        near = text[max(start, line_start - 1500) : line_start]
        header = definitions_in(others, set(_IDENTIFIER.findall(near)), budget // 2)
    if start > 0:
        for part in ("\n".join(imports_above(text, start)), "\n".join(enclosing_signatures(text, start))):
            if part and len(header) + len(part) + 1 <= budget:
                header += part + "\n"
    return header
