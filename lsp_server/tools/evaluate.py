"""`tandem eval`: cut holes in real code, ask the real server for them over LSP, and the raw model too.

Edit similarity is 1 - Levenshtein distance / longer length, on the first line of the suggestion
and of the expected text (trailing whitespace ignored). An empty suggestion counts as similarity 0
and not exact, so dropping suggestions is never free.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types

from lsp_server.config import Settings
from lsp_server.context import CHARS_PER_TOKEN

PACKAGES = ("openai", "pygls", "httpx", "httpx2")
"""Default corpus: code no one here wrote; those not installed are skipped (openai pulls in httpx or httpx2)."""
SHOW_ALL = {"completion": {"minConfidence": 0}}
"""The holes and edits scenarios judge what the server writes, so every suggestion is shown; the confidence
scenario measures what `completion.minConfidence` holds back."""
_BLOCK_OPENER = re.compile(r"^\s*(?:async\s+def|def|class|if|elif|else|for|while|with|try|except|finally)\b.*:\s*$")


@dataclass(frozen=True)
class Hole:
    """One hole: the document as the editor has it, the cursor, and the text that was removed."""

    path: str
    kind: str
    """"line" (the rest of a line, cut anywhere, words included) or "block" (a whole block body)."""
    text: str
    cursor: int
    expected: str


@dataclass
class Answer:
    """What one side suggested for a hole, and how long it took."""

    text: str
    ms: float


@dataclass
class Metrics:
    """Scores of one side over all holes."""

    exact: float
    similarity: float
    block_accuracy: float | None
    repeats: float
    empty: float
    p50_ms: float
    p95_ms: float
    n: int


@dataclass
class Run:
    """Everything one `tandem eval` run measured."""

    seed: int
    holes: int
    packages: list[str]
    server: Metrics
    raw: Metrics
    details: list[dict[str, Any]] = field(default_factory=list)


def corpus(packages: tuple[str, ...] = PACKAGES) -> tuple[list[str], list[Path]]:
    """The installed ones of `packages`, and their Python sources sorted for determinism."""
    found: list[str] = []
    files: list[Path] = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        found.append(name)
        for location in spec.submodule_search_locations:
            files.extend(p for p in Path(location).rglob("*.py") if p.stat().st_size > 2000)
    if not files:
        raise SystemExit(f"tandem eval: none of the packages {', '.join(packages)} is installed")
    return found, sorted(set(files))


def _line_hole(path: Path, source: str, rng: random.Random) -> Hole | None:
    lines = source.split("\n")
    candidates = [
        i for i, line in enumerate(lines) if len(line.strip()) >= 8 and not line.lstrip().startswith(("#", '"', "'"))
    ]
    if not candidates:
        return None
    i = rng.choice(candidates)
    line = lines[i]
    indent = len(line) - len(line.lstrip())
    cut = rng.randint(indent + 1, len(line.rstrip()) - 1)
    start = sum(len(x) + 1 for x in lines[:i])
    cursor = start + cut
    line_end = start + len(line)
    return Hole(str(path), "line", source[:cursor] + source[line_end:], cursor, line[cut:].rstrip())


def _block_hole(path: Path, source: str, rng: random.Random) -> Hole | None:
    lines = source.split("\n")
    blocks = []
    for i, line in enumerate(lines[:-1]):
        if not _BLOCK_OPENER.match(line):
            continue
        base = len(line) - len(line.lstrip())
        end = i + 1
        while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > base):
            end += 1
        while end > i + 1 and not lines[end - 1].strip():
            end -= 1
        body = lines[i + 1 : end]
        if 2 <= len(body) <= 8 and body[0].strip() and not body[0].lstrip().startswith(('"', "'")):
            blocks.append((i, end))
    if not blocks:
        return None
    i, end = rng.choice(blocks)
    first = lines[i + 1]
    indent = first[: len(first) - len(first.lstrip())]
    start = sum(len(x) + 1 for x in lines[: i + 1])
    cursor = start + len(indent)
    after = sum(len(x) + 1 for x in lines[:end]) - 1  # the newline that ends the block
    expected = "\n".join(lines[i + 1 : end])[len(indent) :]
    return Hole(str(path), "block", source[:cursor] + source[after:], cursor, expected)


def cut_holes(files: list[Path], count: int, seed: int, block_share: float = 0.3) -> list[Hole]:
    """`count` holes, the same for the same seed and files, ordered by file and position."""
    rng = random.Random(seed)
    holes: list[Hole] = []
    while len(holes) < count:
        path = rng.choice(files)
        source = path.read_text(encoding="utf-8", errors="replace")
        make = _block_hole if rng.random() < block_share else _line_hole
        hole = make(path, source, rng)
        if hole is not None:
            holes.append(hole)
    return sorted(holes, key=lambda h: (h.path, h.cursor))


@dataclass(frozen=True)
class Edit:
    """What the user did before reaching a hole: typed the definition of a name the hole needs."""

    path: str
    """The file edited: a sibling module the hole's file imports the name from, or the hole's file itself."""
    before: str
    """That file's text without the definition, as it is opened."""
    offset: int
    """Where in `before` the definition is typed."""
    block: str
    """The definition, whole lines."""
    name: str


_TOP_DEFINITION = re.compile(r"(?:async\s+def|def|class)\s+([A-Za-z_]\w*)|([A-Za-z_]\w*)\s*(?::[^=\n]*)?=(?!=)")
_NAME = re.compile(r"\b[A-Za-z_]\w{3,}\b")
_FROM_SIBLING = re.compile(r"^from \.(\w+) import (\([^)]*\)|[^\n]*)", re.MULTILINE)


def definitions_at_top(source: str, most_lines: int = 30) -> dict[str, tuple[int, int]]:
    """Names defined once at the top level of `source` (def, class, assignment), each with the offsets of its
    whole statement: the definition and its indented body, or the assignment up to its closing bracket."""
    lines = source.split("\n")
    found: dict[str, tuple[int, int]] = {}
    seen: set[str] = set()
    offset = 0
    starts = [0]
    for line in lines:
        offset += len(line) + 1
        starts.append(offset)
    for i, line in enumerate(lines):
        match = _TOP_DEFINITION.match(line)
        if match is None:
            continue
        name = match.group(1) or match.group(2)
        end = i + 1
        if match.group(1):
            while end < len(lines) and (not lines[end].strip() or lines[end][:1] in " \t"):
                end += 1
            while end > i + 1 and not lines[end - 1].strip():
                end -= 1
        else:
            depth = _depth(line)
            while depth > 0 and end < len(lines):
                depth += _depth(lines[end])
                end += 1
        if name in seen:
            found.pop(name, None)
        seen.add(name)
        if end - i <= most_lines:
            found[name] = (starts[i], starts[end])
    return found


def _depth(line: str) -> int:
    return sum(line.count(c) for c in "([{") - sum(line.count(c) for c in ")]}")


def _imported_from_siblings(path: Path, source: str) -> dict[str, Path]:
    """Names the file imports, unaliased, from sibling modules (`from .mod import name`), and those modules."""
    found = {}
    for module, names in _FROM_SIBLING.findall(source):
        sibling = path.parent / f"{module}.py"
        if not sibling.is_file():
            continue
        for part in names.strip("()").split(","):
            name = part.strip()
            if re.fullmatch(r"\w+", name):
                found[name] = sibling
    return found


def _edit_hole(path: Path, source: str, rng: random.Random, window: int) -> tuple[Hole, Edit] | None:
    """A line whose rest needs a name the user just defined elsewhere and which the window before the cursor
    does not show: defined in a sibling module, or in this file more than `window` characters above."""
    own = definitions_at_top(source)
    imported = _imported_from_siblings(path, source)
    lines = source.split("\n")
    candidates = []
    start = 0
    for line in lines:
        stripped = line.strip()
        if len(stripped) >= 8 and not stripped.startswith(("#", '"', "'", "from ", "import ", "def ", "class ", "@")):
            for match in _NAME.finditer(line):
                name, at = match.group(), start + match.start()
                shown = source[max(0, at - window) : at]
                if name in shown:
                    continue
                if name in imported or (name in own and own[name][1] <= at - window):
                    candidates.append((start, line, match.start(), name))
        start += len(line) + 1
    if not candidates:
        return None
    line_start, line, column, name = rng.choice(candidates)
    indent = len(line) - len(line.lstrip())
    cut = rng.randint(indent, column)
    cursor = line_start + cut
    hole_text = source[:cursor] + source[line_start + len(line) :]
    hole = Hole(str(path), "edit", hole_text, cursor, line[cut:].rstrip())
    if name in imported:
        sibling = imported[name]
        other = sibling.read_text(encoding="utf-8", errors="replace")
        block = definitions_at_top(other).get(name)
        if block is None:
            return None
        a, b = block
        return hole, Edit(str(sibling), other[:a] + other[b:], a, other[a:b], name)
    a, b = own[name]
    before = hole_text[:a] + hole_text[b:]
    return hole, Edit(str(path), before, a, hole_text[a:b], name)


def cut_edit_holes(files: list[Path], count: int, seed: int, window: int) -> tuple[list[Hole], list[Edit]]:
    """`count` holes that need a name edited elsewhere, one per file, the same for the same seed and files."""
    rng = random.Random(seed)
    order = list(files)
    rng.shuffle(order)
    found: list[tuple[Hole, Edit]] = []
    for path in order:
        if len(found) == count:
            break
        made = _edit_hole(path, path.read_text(encoding="utf-8", errors="replace"), rng, window)
        if made is not None:
            found.append(made)
    found.sort(key=lambda pair: (pair[0].path, pair[0].cursor))
    return [h for h, _ in found], [e for _, e in found]


def replay(client: Any, uri: str, edit: Edit) -> None:
    """Type the edit's definition into the open document `uri` line by line, as didChange events."""
    line = edit.before[: edit.offset].count("\n")
    for version, text in enumerate(edit.block.splitlines(keepends=True), 2):
        at = types.Position(line=line, character=0)
        change = types.TextDocumentContentChangePartial(range=types.Range(at, at), text=text)
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(types.VersionedTextDocumentIdentifier(version=version, uri=uri), [change])
        )
        line += 1


def similarity(a: str, b: str) -> float:
    """1 - Levenshtein distance / length of the longer string; 1.0 for two empty strings."""
    if not a and not b:
        return 1.0
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return 1 - previous[-1] / max(len(a), len(b))


def _first(text: str) -> str:
    return text.split("\n", 1)[0].rstrip()


def repeats_after_cursor(suggestion: str, hole: Hole) -> bool:
    """The suggestion's first line is one of the next three non-blank lines after the cursor (and wrong)."""
    head = _first(suggestion).strip()
    if not head or head == _first(hole.expected).strip():
        return False
    following = [line.strip() for line in hole.text[hole.cursor :].split("\n")[1:] if line.strip()][:3]
    return head in following


def score(holes: list[Hole], answers: list[Answer]) -> Metrics:
    """Exact first line, edit similarity, block accuracy, repeats, empties and latency of one side."""
    exact = sims = repeats = empty = 0.0
    blocks = block_hits = 0
    for hole, answer in zip(holes, answers, strict=True):
        got, want = _first(answer.text), _first(hole.expected)
        if not answer.text.strip():
            empty += 1
        else:
            exact += got == want
            sims += similarity(got, want)
            repeats += repeats_after_cursor(answer.text, hole)
        if hole.kind == "block":
            blocks += 1
            lines = [line.rstrip() for line in answer.text.rstrip().split("\n")]
            block_hits += bool(answer.text.strip()) and lines == [x.rstrip() for x in hole.expected.split("\n")]
    n = len(holes)
    ms = sorted(a.ms for a in answers)
    return Metrics(
        exact=exact / n,
        similarity=sims / n,
        block_accuracy=block_hits / blocks if blocks else None,
        repeats=repeats / n,
        empty=empty / n,
        p50_ms=statistics.median(ms),
        p95_ms=ms[min(n - 1, round(0.95 * (n - 1)))],
        n=n,
    )


_RELATIVE_IMPORT = re.compile(r"^from \.(\w+) import", re.MULTILINE)


def neighbours(hole: Hole, most: int = 3) -> list[Path]:
    """Sibling modules the hole's file imports: what a person editing it would have open too."""
    folder = Path(hole.path).parent
    found = []
    for name in dict.fromkeys(_RELATIVE_IMPORT.findall(hole.text)):
        for candidate in (folder / f"{name}.py", folder / name / "__init__.py"):
            if candidate.is_file() and str(candidate) != hole.path:
                found.append(candidate)
                break
    return found[:most]


def _position(text: str, offset: int) -> types.Position:
    before = text[:offset]
    line = before.count("\n")
    column = before[before.rfind("\n") + 1 :]
    return types.Position(line=line, character=len(column.encode("utf-16-le")) // 2)


async def ask_server(
    holes: list[Hole],
    model: str | None,
    log: Path,
    data_dir: Path,
    options: dict[str, Any] | None = None,
    edits: list[Edit] | None = None,
) -> list[Answer]:
    """Each hole through the real server, as an editor does: didOpen (the file and the siblings it imports),
    an invoked inlineCompletion, didClose. With `edits`, each hole's edit is typed first (see `replay`)."""
    from lsp_server.tools.session import Session

    session = Session("file:///eval/unused.py")
    env = {"TANDEM_DATA_DIR": str(data_dir), **({"TANDEM_MODEL": model} if model else {})}
    await session.start(env, log, options)
    model_state = await session.model()
    if model_state["state"] != "ready":
        await session.stop()
        raise SystemExit(f"tandem eval: the server's model did not load: {model_state}")
    answers = []
    client = session.client
    for n, hole in enumerate(holes):
        uri = f"file:///eval/{n}/{Path(hole.path).name}"
        opened = [f"file:///eval/{n}/open/{path.name}" for path in neighbours(hole)]
        texts = {path.name: path.read_text(encoding="utf-8", errors="replace") for path in neighbours(hole)}
        edit = edits[n] if edits is not None else None
        if edit is not None and edit.path != hole.path:
            texts[Path(edit.path).name] = edit.before
            opened = list(dict.fromkeys([*opened, f"file:///eval/{n}/open/{Path(edit.path).name}"]))
        for other in opened:
            item = types.TextDocumentItem(other, "python", 1, texts[other.rsplit("/", 1)[-1]])
            client.text_document_did_open(types.DidOpenTextDocumentParams(item))
        if edit is not None:
            edited = uri if edit.path == hole.path else f"file:///eval/{n}/open/{Path(edit.path).name}"
            if edited == uri:
                item = types.TextDocumentItem(uri, "python", 1, edit.before)
                client.text_document_did_open(types.DidOpenTextDocumentParams(item))
            replay(client, edited, edit)
        if edit is None or edit.path != hole.path:
            client.text_document_did_open(
                types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, hole.text))
            )
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=_position(hole.text, hole.cursor),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
        )
        started = time.perf_counter()
        result = await client.text_document_inline_completion_async(params)
        ms = (time.perf_counter() - started) * 1000
        items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
        text = items[0].insert_text if items else ""
        answer = Answer(text if isinstance(text, str) else text.value, ms)
        answers.append(answer)
        for closed in [uri, *opened]:
            client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(closed)))
        if (
            items
            and items[0].command is not None
            and answer.text.strip()
            and _first(answer.text) == _first(hole.expected)
        ):
            # The user takes a suggestion whose first line is what they were about to type (the server learns what
            # is kept from this: `completion.minConfidence`); the file is closed, so nothing is prefetched after it.
            await client.workspace_execute_command_async(
                types.ExecuteCommandParams(command=items[0].command.command, arguments=items[0].command.arguments)
            )
    await session.stop()
    return answers


def raw_prompt(hole: Hole, settings: Settings) -> str:
    """The raw model's prompt: the prefix only, as many characters as the server's token budget, from a line start."""
    budget = int(settings.prompt_tokens * CHARS_PER_TOKEN)
    start = max(0, hole.cursor - budget)
    if start:
        start = hole.text.find("\n", start, hole.cursor) + 1 or start
    return hole.text[start : hole.cursor]


def ask_raw(holes: list[Hole], model_path: str, settings: Settings) -> list[Answer]:
    """Each hole through llama-cpp-python directly: prefix-only prompt, greedy, stop at the newline."""
    import llama_cpp

    n_ctx = -(-settings.context_size // 256) * 256
    llm = llama_cpp.Llama(model_path=model_path, n_ctx=n_ctx, flash_attn=True, n_batch=512, verbose=False)
    answers = []
    for hole in holes:
        started = time.perf_counter()
        out = llm.create_completion(
            raw_prompt(hole, settings),
            max_tokens=settings.max_tokens,
            temperature=0.0,
            top_k=1,
            repeat_penalty=1.0,
            stop=["\n"],
        )
        answers.append(Answer(out["choices"][0]["text"], (time.perf_counter() - started) * 1000))  # type: ignore[index]
    return answers


def _fmt(value: float | None, percent: bool = True) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.1f} %" if percent else f"{value:.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def _side_by_side(title: str, names: tuple[str, str, str], a: Metrics, b: Metrics, blocks: bool = False) -> str:
    """Two runs' metrics side by side, as a Markdown table under `title`."""
    rows = [
        ("exact first line", _fmt(a.exact), _fmt(b.exact), _ratio(a.exact, b.exact)),
        (
            "edit similarity (first line)",
            f"{a.similarity:.3f}",
            f"{b.similarity:.3f}",
            _ratio(a.similarity, b.similarity),
        ),
    ]
    if blocks:
        rows.append(("block accuracy (block holes)", _fmt(a.block_accuracy), _fmt(b.block_accuracy), "-"))
    rows += [
        ("repeats text after cursor", _fmt(a.repeats), _fmt(b.repeats), "-"),
        ("empty suggestions", _fmt(a.empty), _fmt(b.empty), "-"),
        ("latency p50 (ms)", _fmt(a.p50_ms, False), _fmt(b.p50_ms, False), "-"),
        ("latency p95 (ms)", _fmt(a.p95_ms, False), _fmt(b.p95_ms, False), "-"),
    ]
    return _markdown(title, names, rows)


def _markdown(title: str, names: tuple[str, str, str], rows: list[tuple[str, str, str, str]]) -> str:
    """Rows of (metric, one side, the other, their ratio) as a Markdown table under `title`."""
    out = [title, "", f"| metric | {names[0]} | {names[1]} | {names[2]} |", "|---|---|---|---|"]
    out += [f"| {name} | {x} | {y} | {r} |" for name, x, y, r in rows]
    return "\n".join(out)


def table(run: Run) -> str:
    """The two sides side by side, as a Markdown table."""
    title = f"{run.holes} holes, seed {run.seed}, from {', '.join(run.packages)}"
    return _side_by_side(title, ("tandem server", "raw model", "server/raw"), run.server, run.raw, blocks=True)


def edits_table(holes: int, seed: int, packages: list[str], on: Metrics, off: Metrics) -> str:
    """The edits scenario, the ring buffer on and off, as a Markdown table."""
    title = f"{holes} edit holes, seed {seed}, from {', '.join(packages)}"
    return _side_by_side(title, ("recent edits on", "off", "on/off"), on, off)


def _run_edits(args: argparse.Namespace, packages: list[str], files: list[Path]) -> int:
    settings = Settings()
    holes, edits = cut_edit_holes(files, args.holes, args.seed, int(settings.prompt_tokens * CHARS_PER_TOKEN))
    work = Path(tempfile.mkdtemp(prefix="tandem-eval-"))
    on = asyncio.run(ask_server(holes, args.model, work / "on.log", work / "on", SHOW_ALL, edits))
    off_options = {"completion": {**SHOW_ALL["completion"], "recentChunks": 0}}
    off = asyncio.run(ask_server(holes, args.model, work / "off.log", work / "off", off_options, edits))
    on_metrics, off_metrics = score(holes, on), score(holes, off)
    print(edits_table(len(holes), args.seed, packages, on_metrics, off_metrics))
    if args.json is not None:
        details = [
            {"path": h.path, "defined": e.path, "name": e.name, "expected": h.expected, "on": a.text, "off": b.text}
            for h, e, a, b in zip(holes, edits, on, off, strict=True)
        ]
        result = {"seed": args.seed, "holes": len(holes), "on": asdict(on_metrics), "off": asdict(off_metrics)}
        args.json.write_text(json.dumps({**result, "details": details}, indent=1) + "\n")
    sys.stdout.flush()
    return 0


def _generated_tokens(data_dir: Path) -> int:
    """Tokens the server's completions generated, from the ledger it wrote in `data_dir`."""
    with contextlib.closing(sqlite3.connect(data_dir / "ledger.sqlite3")) as conn:
        row = conn.execute("SELECT COALESCE(SUM(completion_tokens), 0) FROM requests WHERE task = 'completion'")
        return int(row.fetchone()[0])


def confidence_table(holes: int, seed: int, packages: list[str], sides: list[tuple[int, Metrics, int]]) -> str:
    """The confidence scenario: suggestions shown, exact matches and decoding, `completion.minConfidence` auto
    and 0, as a Markdown table."""
    (shown_on, on, tokens_on), (shown_off, off, tokens_off) = sides
    rows = [
        ("suggestions shown", str(shown_on), str(shown_off), _ratio(shown_on, shown_off)),
        ("exact first line", str(round(on.exact * on.n)), str(round(off.exact * off.n)), "-"),
        (
            "edit similarity (first line)",
            f"{on.similarity:.3f}",
            f"{off.similarity:.3f}",
            _ratio(on.similarity, off.similarity),
        ),
        (
            "exact among those shown",
            _fmt(on.exact * on.n / shown_on if shown_on else None),
            _fmt(off.exact * off.n / shown_off if shown_off else None),
            "-",
        ),
        ("tokens generated", str(tokens_on), str(tokens_off), _ratio(tokens_on, tokens_off)),
        ("latency p50 (ms)", _fmt(on.p50_ms, False), _fmt(off.p50_ms, False), "-"),
    ]
    title = f"{holes} holes, seed {seed}, from {', '.join(packages)}"
    return _markdown(title, ("minConfidence auto", "0 (show all)", "auto/0"), rows)


def _run_confidence(args: argparse.Namespace, packages: list[str], files: list[Path]) -> int:
    holes = cut_holes(files, args.holes, args.seed)
    work = Path(tempfile.mkdtemp(prefix="tandem-eval-"))
    sides = []
    details: dict[str, list[str]] = {}
    for name, value in (("auto", "auto"), ("off", 0)):
        options = {"completion": {"minConfidence": value}}
        answers = asyncio.run(ask_server(holes, args.model, work / f"{name}.log", work / name, options))
        shown = sum(1 for a in answers if a.text.strip())
        sides.append((shown, score(holes, answers), _generated_tokens(work / name)))
        details[name] = [a.text for a in answers]
    print(confidence_table(len(holes), args.seed, packages, sides))
    if args.json is not None:
        rows = [
            {"path": h.path, "expected": h.expected, "auto": a, "off": b}
            for h, a, b in zip(holes, details["auto"], details["off"], strict=True)
        ]
        args.json.write_text(json.dumps({"seed": args.seed, "holes": len(holes), "details": rows}, indent=1) + "\n")
    sys.stdout.flush()
    return 0


def main(argv: list[str]) -> int:
    """Entry point of `tandem eval`."""
    parser = argparse.ArgumentParser(prog="tandem eval", description=__doc__)
    parser.add_argument("--holes", type=int, default=60, help="number of holes (default 60)")
    parser.add_argument("--seed", type=int, default=1, help="seed for choosing holes (default 1)")
    parser.add_argument("--packages", default=",".join(PACKAGES), help="installed packages to cut holes in")
    parser.add_argument("--model", help="GGUF file (default: the embedded Gemma 3 270M)")
    parser.add_argument("--json", type=Path, help="write the results here, for comparing commits")
    parser.add_argument(
        "--scenario",
        choices=("holes", "edits", "confidence"),
        default="holes",
        help="holes: the server against the raw model; edits: holes that need a name the user just defined"
        " elsewhere, the server with its recent-edit context on and off; confidence: the server with"
        " completion.minConfidence auto and 0 (suggestions shown, exact matches, tokens generated)",
    )
    args = parser.parse_args(argv)
    if args.holes < 1:
        print("tandem eval: --holes must be at least 1", file=sys.stderr)
        return 2
    from lsp_server.backends.local import embedded_model_path
    from lsp_server.config import cache_dir

    packages, files = corpus(tuple(p for p in args.packages.split(",") if p))
    if args.scenario == "edits":
        return _run_edits(args, packages, files)
    if args.scenario == "confidence":
        return _run_confidence(args, packages, files)
    holes = cut_holes(files, args.holes, args.seed)
    model_path = args.model or str(embedded_model_path(cache_dir()))
    work = Path(tempfile.mkdtemp(prefix="tandem-eval-"))
    server_answers = asyncio.run(ask_server(holes, args.model, work / "server.log", work, SHOW_ALL))
    raw_answers = ask_raw(holes, model_path, Settings())
    result = Run(args.seed, len(holes), packages, score(holes, server_answers), score(holes, raw_answers))
    result.details = [
        {"path": h.path, "kind": h.kind, "expected": h.expected, "server": s.text, "raw": r.text}
        for h, s, r in zip(holes, server_answers, raw_answers, strict=True)
    ]
    print(table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(result), indent=1) + "\n")
    sys.stdout.flush()
    return 0
