"""Context for prompts and assist: imports, enclosing signatures, other files' definitions, stable while typing."""

from __future__ import annotations

import itertools

import pytest

from lsp_server import context
from lsp_server.completion import prompt as prompt_module
from lsp_server.completion.prompt import build_prompt, context_header, definitions_in
from lsp_server.context import definitions, enclosing_signatures, imports_above

FILE = (
    "import os\n"
    "from typing import (\n"
    "    Any,\n"
    "    Callable,\n"
    ")\n"
    "from __future__ import annotations\n"
    "\n"
    "class Queue(Base):\n"
    '    """A queue."""\n'
    "\n"
    "    def first(self):\n"
    "        return 1\n"
    "\n"
    "    async def pop(\n"
    "        self, wait: float = 1.0\n"
    "    ) -> Any:\n"
    "        import json\n"
    "        value = self.items.popleft()\n"
    "        return value\n"
)
BODY = FILE.index("        value")


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        pytest.param(FILE.index("class"), ["import os", "from typing import (\n    Any,\n    Callable,\n)"], id="all"),
        pytest.param(FILE.index("from typing"), ["import os"], id="only-above-start"),
        pytest.param(0, [], id="start-of-file"),
    ],
)
def test_imports_above(start: int, expected: list[str]) -> None:
    assert imports_above(FILE, start) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '#include <stdio.h>\n#include "queue.h"\n\nint main(void) {\n',
            ["#include <stdio.h>", '#include "queue.h"'],
            id="c-include-is-no-comment",
        ),
        pytest.param(
            "import fs from 'fs';\nconst path = require('path');\n\nfunction f() {\n",
            ["import fs from 'fs';", "const path = require('path');"],
            id="javascript",
        ),
        pytest.param('package main\n\nimport "fmt"\n\nfunc main() {\n', ["package main", 'import "fmt"'], id="go"),
        pytest.param("use std::io;\n\nfn main() {\n", ["use std::io;"], id="rust"),
        pytest.param(
            '"""Reads\nfrom the start of a file."""\n# import this\nimport os\n\nx = 1\n',
            ["import os"],
            id="prose-and-comments-are-not-imports",
        ),
        pytest.param("x = 1\n" * 2000 + "import late\n\nx = 2\n", [], id="only-the-first-lines-are-read"),
    ],
)
def test_imports_above_in_other_languages(text: str, expected: list[str]) -> None:
    assert imports_above(text, len(text)) == expected


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        pytest.param(
            BODY,
            ["class Queue(Base):", "    async def pop(\n        self, wait: float = 1.0\n    ) -> Any:"],
            id="method-body-multiline-signature",
        ),
        pytest.param(FILE.index("    def first"), ["class Queue(Base):"], id="class-body"),
        pytest.param(FILE.index("        return 1"), ["class Queue(Base):", "    def first(self):"], id="other-method"),
        pytest.param(FILE.index("class"), [], id="top-level"),
    ],
)
def test_enclosing_signatures(start: int, expected: list[str]) -> None:
    assert enclosing_signatures(FILE, start) == expected


METHODS = "class A:\n    def f(self):\n        x = 1\n\n    def g(self):\n        pass\n"


@pytest.mark.parametrize(
    ("text", "start", "at", "expected"),
    [
        pytest.param(
            METHODS, METHODS.index("        x"), None, ["class A:", "    def f(self):"], id="the-window-start's-line"
        ),
        pytest.param(
            METHODS, METHODS.index("        x"), METHODS.index("    def g"), ["class A:"], id="a-shallower-line-below"
        ),
        pytest.param(
            "int main(int argc) {\n    for (;;) {\n        work(argc);\n",
            -len("        work(argc);\n"),
            None,
            ["int main(int argc) {"],
            id="c-function-not-its-loop",
        ),
        pytest.param(
            "export class Store {\n  async load(path) {\n    return 1;\n",
            -len("    return 1;\n"),
            None,
            ["export class Store {", "  async load(path) {"],
            id="javascript-class-and-method",
        ),
        pytest.param("def f():\n# a note\n    x = 1\n", -len("    x = 1\n"), None, ["def f():"], id="margin-comment"),
        pytest.param(
            "class Far:\n" + "    x = 1\n" * 1000 + "    y = 2\n", -len("    y = 2\n"), None, [], id="too-far-above"
        ),
    ],
)
def test_enclosing_signatures_of_a_line(text: str, start: int, at: int | None, expected: list[str]) -> None:
    assert enclosing_signatures(text, start % len(text), at) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "class Item:\n    def __init__(self, name):\n        raise ValueError(name)\n\n"
            "async def load(\n    path,\n):\n    await fetch(path)\n",
            [
                ("Item", "class Item:"),
                ("__init__", "    def __init__(self, name):"),
                ("load", "async def load(\n    path,\n):"),
            ],
            id="python-not-the-calls",
        ),
        pytest.param(
            "static int add(int a, int b) {\n    return add(a, b);\n}\n",
            [("add", "static int add(int a, int b) {")],
            id="c",
        ),
        pytest.param(
            "pub fn run() {\n}\nstruct Queue {\n}\n",
            [("run", "pub fn run() {"), ("Queue", "struct Queue {")],
            id="rust",
        ),
    ],
)
def test_definitions(text: str, expected: list[tuple[str, str]]) -> None:
    assert list(definitions(text)) == expected


OTHER = (
    "file:///w/models.py",
    "class Item:\n    def __init__(self, name: str) -> None:\n        pass\n\ndef load(path):\n    pass\n",
)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        pytest.param({"load"}, "# models.py:\n# def load(path):\n", id="function"),
        pytest.param({"Item", "load"}, "# models.py:\n# class Item:\n# def load(path):\n", id="both"),
        pytest.param({"missing"}, "", id="not-defined"),
    ],
)
def test_definitions_in(names: set[str], expected: str) -> None:
    assert definitions_in([OTHER], names, 1000) == expected


def test_definitions_respect_their_budget() -> None:
    assert definitions_in([OTHER], {"Item", "load"}, 10) == ""


def test_header_names_other_files_definitions_used_on_earlier_lines() -> None:
    text = "x = 1\nitem = load('a')\nitem.na"
    header = context_header(text, 0, len(text), [OTHER], 1000)
    assert header == "# models.py:\n# def load(path):\n"
    # What is being typed on the cursor's line does not change the header (KV cache reuse).
    assert context_header(text + "me + Item", 0, len(text) + 9, [OTHER], 1000) == header


def _long_file() -> str:
    methods = "".join(f"    def method_{i}(self, value):\n        return value + {i}\n\n" for i in range(120))
    return "import os\nimport sys\n\nclass Big:\n" + methods


def test_prompt_carries_imports_and_signature_when_they_are_out_of_the_window() -> None:
    text = _long_file() + "    def last(self, items):\n        total = 0\n" + "        total += 1\n" * 10
    cursor = len(text)
    prompt = build_prompt(text, cursor, None, budget_tokens=256)
    assert prompt.prefix_start > text.index("class Big")
    assert prompt.text.startswith("import os\nimport sys\nclass Big:\n")
    assert prompt.text.endswith(text[prompt.prefix_start : cursor])
    assert len(prompt.text) <= 256 * 3.2


def test_prompt_is_byte_stable_while_typing_on_a_line() -> None:
    text = _long_file() + "    def last(self, items):\n        total = 0\n        "
    typed = "total += len(items)"
    others = [OTHER]
    prompts = [
        build_prompt(text + typed[:n], len(text) + n, None, budget_tokens=256, others=others).text
        for n in range(len(typed) + 1)
    ]
    assert all(after.startswith(before) for before, after in itertools.pairwise(prompts))


def test_a_keystroke_does_not_parse_the_other_documents_again(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    statements = context._statements

    def counting(text: str) -> list[tuple[int, list[str]]]:
        parsed.append(text)
        return statements(text)

    monkeypatch.setattr(context, "_statements", counting)
    definitions.cache_clear()
    text = _long_file() + "    def last(self, items):\n        item = load('a')\n        "
    for typed in ("", "i", "it"):
        build_prompt(text + typed, len(text) + len(typed), None, budget_tokens=256, others=[OTHER])
    assert parsed.count(OTHER[1]) == 1


def test_the_header_is_built_once_per_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    header = prompt_module.context_header

    def counting(text: str, start: int, *args: object) -> str:
        calls.append(start)
        return header(text, start, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(prompt_module, "context_header", counting)
    text = _long_file()
    prompt = build_prompt(text, len(text), None, budget_tokens=256, others=[OTHER])
    assert calls == [prompt.prefix_start]
