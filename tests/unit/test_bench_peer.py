"""The peer's requests, shaped as llama.vscode shapes them (benchmarks/peer.py)."""

from __future__ import annotations

import pytest

from benchmarks.peer import request_body

TEXT = "import os\n\n\ndef main():\n    path = os.path.join(\n"
BLOCK = "import os\n\n\ndef main():\n    "


@pytest.mark.parametrize(
    ("text", "fim", "cursor", "path", "expected"),
    [
        pytest.param(
            TEXT,
            True,
            TEXT.index("join(") + 5,
            "/infill",
            {
                "input_prefix": "import os\n\n\ndef main():\n",
                "prompt": "    path = os.path.join(",
                "input_suffix": "\n\n",
                "n_indent": 4,
                "stop": ["\n"],
            },
            id="fim-single-line-stops-at-the-line-end",
        ),
        pytest.param(
            TEXT,
            False,
            TEXT.index("join(") + 5,
            "/completion",
            {"prompt": "import os\n\n\ndef main():\n    path = os.path.join(", "stop": ["\n"]},
            id="no-fim-one-prompt",
        ),
        pytest.param(
            BLOCK,
            False,
            len(BLOCK),
            "/completion",
            {"prompt": BLOCK, "n_indent": 4},
            id="block-start-is-multi-line",
        ),
    ],
)
def test_request_body(text: str, fim: bool, cursor: int, path: str, expected: dict[str, object]) -> None:
    got_path, body = request_body(text, cursor, fim, 96, "auto")
    assert got_path == path
    assert body["cache_prompt"] is True and body["n_predict"] == 96 and body["stream"] is True
    for key, value in expected.items():
        assert body[key] == value, key
    if "stop" not in expected:
        assert "stop" not in body
