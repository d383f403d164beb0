"""llama-server's own API as tandem asks it: the single- and multi-line policy in the server's terms."""

from __future__ import annotations

from typing import Any

import pytest

from lsp_server.backends import Infill, TextPrompt
from lsp_server.backends.endpoint import MULTILINE_PREDICT_MS, native_request
from lsp_server.backends.openai_compat import LINE_MAX_TOKENS, continued

LINE = Infill("import os\n\ndef add(a, b):\n    return ", "\n\nprint(add(1, 2))\n", (("util.py", "def sub(a, b):\n"),))
BLOCK = Infill("class A:\n    def f(self):\n        ", "\n")
COMMON = {"stream": True, "cache_prompt": True, "top_k": 1, "timings_per_token": True}
FIM_LINE = {
    **COMMON,
    "n_predict": LINE_MAX_TOKENS,
    "stop": ["\n"],
    "input_prefix": "import os\n\ndef add(a, b):\n",
    "prompt": "    return ",
    "input_suffix": "\n\nprint(add(1, 2))\n",
    "input_extra": [{"filename": "util.py", "text": "def sub(a, b):\n"}],
}


@pytest.mark.parametrize(
    ("prompt", "fim", "path", "expected"),
    [
        pytest.param(
            TextPrompt("<pre>…", 96, ("\n",), LINE),
            True,
            "/infill",
            FIM_LINE,
            id="fim-line",
        ),
        pytest.param(
            TextPrompt("…", 96, (), BLOCK),
            True,
            "/infill",
            {
                **COMMON,
                "n_predict": 96,
                "stop": [],
                "n_indent": 8,
                "t_max_predict_ms": MULTILINE_PREDICT_MS,
                "input_prefix": "class A:\n    def f(self):\n",
                "prompt": "        ",
                "input_suffix": "\n",
                "input_extra": [],
            },
            id="fim-block",
        ),
        pytest.param(
            continued(TextPrompt("<pre>…", 96, ("\n",), LINE), "a + "),
            True,
            "/infill",
            {**FIM_LINE, "prompt": "    return a + "},
            id="fim-line-going-on-after-a-broken-reply",
        ),
        pytest.param(
            continued(TextPrompt("<pre>…", 96, (), BLOCK), "x = 1\n        return x\n"),
            True,
            "/infill",
            {
                **COMMON,
                "n_predict": 96,
                "stop": [],
                "n_indent": 8,  # the cursor's line's, not the last line that came
                "t_max_predict_ms": MULTILINE_PREDICT_MS,
                "input_prefix": "class A:\n    def f(self):\n",
                "prompt": "        x = 1\n        return x\n",
                "input_suffix": "\n",
                "input_extra": [],
            },
            id="fim-block-going-on-after-a-broken-reply",
        ),
        pytest.param(
            TextPrompt("import os\n\ndef add(a, b):\n    return ", 96, ("\n",), Infill(LINE.prefix)),
            False,
            "/completion",
            {
                **COMMON,
                "n_predict": LINE_MAX_TOKENS,
                "stop": ["\n"],
                "prompt": "import os\n\ndef add(a, b):\n    return ",
            },
            id="prefix-only-line",
        ),
        pytest.param(
            TextPrompt("User: explain\nAssistant:", 512, ("\nUser:",)),
            True,
            "/completion",
            {**COMMON, "n_predict": 512, "stop": ["\nUser:"], "prompt": "User: explain\nAssistant:"},
            id="chat-no-time-limit",
        ),
    ],
)
def test_native_request(prompt: TextPrompt, fim: bool, path: str, expected: dict[str, Any]) -> None:
    assert native_request(prompt, fim) == (path, expected)
