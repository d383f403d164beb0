"""Context for the prompt: imports, enclosing signatures, other files' definitions, stable while typing."""

from __future__ import annotations

import itertools

import pytest

from lsp_server.completion.prompt import (
    build_prompt,
    context_header,
    definitions_in,
    enclosing_signatures,
    imports_above,
)

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
