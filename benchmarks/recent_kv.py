"""KV-cache reuse with the recent-edit ring: prompt tokens re-evaluated per keystroke, ring on and off.

Replays what the server does for one user: a function is typed into one file (`string.py`), then the
user goes to another (`textwrap.py`, ~1,100 tokens above the cursor) and types two lines there, a
request on every key. Each request's prompt is built by the real `RecentChunks` and `build_prompt`
and tokenized with the model family's vocabulary; llama.cpp reuses the longest common prefix of the
previous prompt's tokens, so a keystroke re-evaluates the tokens after it.
Run: python benchmarks/recent_kv.py
"""

from __future__ import annotations

import inspect
import statistics
import string
import sys
import textwrap
from pathlib import Path

# Run as a script from a checkout, the package is beside this folder rather than installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lsp_server.backends.decoding import common_prefix
from lsp_server.completion.prompt import FAMILIES, FimTemplate, build_prompt
from lsp_server.recent import RecentChunks, display_path

VOCAB = Path(__file__).resolve().parents[1] / ".cache" / "vocab"
TYPED = ["        width = self.width - len(indent)", "        lines.append(indent + chunk.strip())"]
OTHER = "file:///ws/string.py"
HERE = "file:///ws/textwrap.py"


def _source(module: object) -> str:
    path = inspect.getsourcefile(module)  # type: ignore[arg-type]
    assert path is not None
    return Path(path).read_text(encoding="utf-8")


def _tokenizer(vocab: str) -> object:
    import llama_cpp

    return llama_cpp.Llama(model_path=str(VOCAB / vocab), vocab_only=True, verbose=False)


def replay(template: FimTemplate | None, tokenize: object, most: int) -> tuple[list[int], int]:
    """Tokens re-evaluated at each request (the first after the move to textwrap.py, then each keystroke), and
    the chunks the last prompt showed."""
    ring = RecentChunks(most)
    other = _source(string)
    definition = other.index("def capwords")
    first = other.count("\n", 0, definition)
    for n in range(5):  # typed line by line
        ring.edited(OTHER, first + n, 0, 1)
    here = _source(textwrap)
    cursor = here.index("    def _wrap_chunks")  # ~1,100 tokens in
    text = here[:cursor] + here[cursor:]
    previous: list[int] = []
    costs = []
    line = here.count("\n", 0, cursor)
    for typed in TYPED:
        for i in range(len(typed) + 1):
            now = text[:cursor] + typed[:i] + "\n" + text[cursor:]
            at = cursor + i
            if i:
                ring.edited(HERE, line, 0, 0)
            chunks = ring.context(HERE, now, at, {OTHER: other})
            recent = [(display_path(c.uri, "/ws"), c) for c in chunks]
            prompt = build_prompt(now, at, template, 1536, recent=recent, path="textwrap.py", repo_name="ws")
            tokens = tokenize.tokenize(prompt.text.encode(), add_bos=False, special=True)  # type: ignore[attr-defined]
            costs.append(len(tokens) - common_prefix(previous, tokens))
            previous = tokens
        text = text[:cursor] + typed + "\n" + text[cursor:]
        cursor += len(typed) + 1
        line += 1
    return costs, len(chunks)


def main() -> None:
    print(
        "| layout (vocabulary) | ring | chunks shown | first prompt | re-evaluated per keystroke, mean / p95 | keys |"
    )
    print("|---|---|---|---|---|---|")
    for family, vocab in (
        ("prefix-only (Qwen2 vocabulary)", "ggml-vocab-qwen2.gguf"),
        ("qwen2.5-coder", "ggml-vocab-qwen2.gguf"),
        ("starcoder", "ggml-vocab-starcoder.gguf"),
    ):
        template = FAMILIES.get(family)
        tokenize = _tokenizer(vocab)
        for most in (8, 0):
            costs, chunks = replay(template, tokenize, most)
            keys = sorted(costs[1:])
            p95 = keys[min(len(keys) - 1, int(0.95 * len(keys)))]
            shown = "on" if most else "off"
            print(f"| {family} | {shown} | {chunks} | {costs[0]} | {statistics.mean(keys):.1f} / {p95} | {len(keys)} |")


if __name__ == "__main__":
    main()
