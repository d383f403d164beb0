"""What surrounds a place in code: the file's imports, the definitions enclosing it, the definitions
in other files. Line and indentation heuristics for any language; completion prompts and assist
messages both read context through these functions."""

from __future__ import annotations

import functools
import re

CHARS_PER_TOKEN = 3.2
"""Characters a token holds, wherever text is sized in tokens or tokens are estimated from text.

Measured on this package's code: 3.2 (DeepSeek-Coder's vocabulary) to 4.0 (Qwen2's); prose 3.0-3.4.
The low end errs safe both ways: a prompt sized with it fits its token budget, and usage estimated
with it is too high rather than too low for a spending budget."""

SCAN_CHARS = 8_000
"""How far above a window imports and enclosing definitions are looked for: bounded work per keystroke."""

_IMPORT = re.compile(
    r"(?:import\s|from\s+(?!__future__\b)[\w.]+\s+import\s|#\s*include\s|using\s+[\w.]+\s*;|use\s+[\w:]+"
    r"|package\s+[\w.]+|require(?:_relative)?[\s(]|(?:const|let|var)\s+[\w{}\s,]+=\s*require\()"
)
# Group 1 or 2 is the defined name.
_DEFINITION = re.compile(
    r"\s*(?:(?:export|default|pub(?:\([^)]*\))?|public|private|protected|internal|static|async"
    r"|abstract|final|override|open|unsafe|extern|inline|virtual)\s+)*"
    r"(?:def|class|fn|func|function|impl|struct|enum|interface|trait|module|namespace|object)\b\s*(\w*)"
    # C-family functions: `int main(int argc) {`, `std::string Foo::bar() const`; not statements
    # that call something, such as Python's `raise ValueError(x)`.
    r"|\s*(?!(?:if|for|while|switch|catch|return|else|elif|raise|throw|await|yield|assert|del|not|new"
    r"|delete|case|defer|go)\b)[A-Za-z_][\w:<>,*&\[\] ]*[\s*&]\*?"
    r"([A-Za-z_][\w:~]*)\s*\([^;]*\)\s*(?:const\s*)?\{?\s*$"
)


def _statements(text: str) -> list[tuple[int, list[str]]]:
    """Top-down logical lines of `text` as (indentation, physical lines); brackets join lines.

    Comment lines are left out (a comment at the margin inside a function closes nothing), C's
    `#include` is not a comment."""
    lines = text.split("\n")
    out: list[tuple[int, list[str]]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        stripped = line.lstrip()
        if not stripped or (stripped.startswith("#") and not _IMPORT.match(stripped)):
            continue
        statement = [line]
        depth = line.count("(") + line.count("[") - line.count(")") - line.count("]")
        while depth > 0 and i < len(lines) and len(statement) < 12:
            statement.append(lines[i])
            depth += lines[i].count("(") + lines[i].count("[") - lines[i].count(")") - lines[i].count("]")
            i += 1
        out.append((len(line) - len(stripped), statement))
    return out


def _joined(statement: list[str]) -> str:
    return "\n".join(line.rstrip() for line in statement)


def imports_above(text: str, start: int) -> list[str]:
    """The file's top-level import statements above `start`, from its first lines."""
    head = text[: min(start, SCAN_CHARS)]
    if start < len(text) and start > len(head):
        head = head[: head.rfind("\n") + 1]
    return [_joined(s) for indent, s in _statements(head) if indent == 0 and _IMPORT.match(s[0])]


def enclosing_signatures(text: str, start: int, at: int | None = None) -> list[str]:
    """Signatures of the definitions open at `start` that enclose the line at `at` (default: the
    line at `start`), outermost first. Only text above `start` is read: below it, the caller shows
    the code itself."""
    scan_from = text.rfind("\n", 0, max(0, start - SCAN_CHARS)) + 1
    stack: list[tuple[int, str]] = []
    for indent, statement in _statements(text[scan_from:start]):
        while stack and stack[-1][0] >= indent:
            stack.pop()
        signature = _joined(statement)
        if _DEFINITION.match(signature):
            stack.append((indent, signature))
    line_start = text.rfind("\n", 0, start if at is None else at) + 1
    first = next((line for line in text[line_start : line_start + 4000].split("\n") if line.strip()), "")
    level = len(first) - len(first.lstrip())
    return [signature for indent, signature in stack if indent < level]


@functools.lru_cache(maxsize=32)
def definitions(text: str) -> tuple[tuple[str, str], ...]:
    """(name, signature) of every definition in `text`, in order.

    Cached by text: completion reads the other open documents on every keystroke, and they rarely
    change meanwhile."""
    found = []
    for _, statement in _statements(text):
        signature = _joined(statement)
        match = _DEFINITION.match(signature)
        if match is not None and (name := match.group(1) or match.group(2)):
            found.append((name, signature))
    return tuple(found)
