"""FIM templates against real tokenizers: vocab-only GGUFs and a tiny generated model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import llama_cpp
import pytest

from lsp_server.completion.prompt import (
    FAMILIES,
    FimTemplate,
    build_prompt,
    marker_problems,
    template_from_gguf,
)
from tests.tiny_gguf import FIM_MARKERS, write_tiny_fim_model

VOCAB_DIR = Path(__file__).resolve().parents[2] / ".cache" / "vocab"
DOC = 'def greet(name):\n    """Say hello."""\n    print("hi", name)\n\ngreet("x")\n'
CURSOR = DOC.index('print("hi"') + len("print(")


@pytest.fixture(scope="module")
def vocab() -> Iterator[Callable[[str], llama_cpp.Llama]]:
    """Loads `ggml-vocab-<name>.gguf` once per module."""
    loaded: dict[str, llama_cpp.Llama] = {}

    def load(name: str) -> llama_cpp.Llama:
        path = VOCAB_DIR / f"ggml-vocab-{name}.gguf"
        if not path.is_file():
            pytest.fail(
                f"{path} is missing: `make test` extracts the vocab-only GGUFs from"
                " llama-cpp-python's source distribution into .cache/vocab"
            )
        if name not in loaded:
            loaded[name] = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        return loaded[name]

    yield load
    for llm in loaded.values():
        llm.close()


def _tokenize(llm: llama_cpp.Llama) -> Callable[[str], list[int]]:
    return lambda text: list(llm.tokenize(text.encode(), add_bos=False, special=True))


def _token_text(llm: llama_cpp.Llama) -> Callable[[int], str]:
    return lambda token: llm.detokenize([token], special=True).decode()


def _expected_tokens(llm: llama_cpp.Llama, template: FimTemplate, prefix: str, suffix: str) -> list[int]:
    tokenize = _tokenize(llm)
    [pre], [suf], [mid] = (tokenize(m) for m in (template.prefix, template.suffix, template.middle))
    return [pre, *tokenize(prefix), suf, *tokenize(suffix), mid]


@pytest.mark.parametrize(
    ("family", "vocab_name", "split_markers"),
    [
        pytest.param("starcoder", "starcoder", [], id="starcoder"),
        pytest.param("starcoder", "refact", [], id="starcoder-markers-in-refact"),
        pytest.param("deepseek-coder", "deepseek-coder", [], id="deepseek-coder"),
        pytest.param(
            "qwen2.5-coder",
            "qwen2",
            ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"],
            id="qwen2-vocab-lacks-qwen2.5-markers",
        ),
        pytest.param("codestral", "starcoder", ["[PREFIX]", "[SUFFIX]"], id="codestral-has-no-middle"),
        pytest.param(
            "codellama",
            "llama-spm",
            ["\u2581<PRE>", "\u2581<SUF>", "\u2581<MID>"],
            id="llama-vocab-lacks-codellama-markers",
        ),
    ],
)
def test_marker_problems(
    vocab: Callable[[str], llama_cpp.Llama],
    family: str,
    vocab_name: str,
    split_markers: list[str],
) -> None:
    problems = marker_problems(FAMILIES[family], _tokenize(vocab(vocab_name)))
    assert len(problems) == len(split_markers)
    for problem, marker in zip(problems, split_markers, strict=True):
        assert repr(marker) in problem


@pytest.mark.parametrize(
    ("family", "vocab_name"),
    [
        pytest.param("starcoder", "starcoder", id="starcoder"),
        pytest.param("starcoder", "refact", id="refact"),
        pytest.param("deepseek-coder", "deepseek-coder", id="deepseek-coder"),
    ],
)
def test_prompt_tokenizes_to_marker_ids(vocab: Callable[[str], llama_cpp.Llama], family: str, vocab_name: str) -> None:
    llm, template = vocab(vocab_name), FAMILIES[family]
    prompt = build_prompt(DOC, CURSOR, template, budget_tokens=200)
    tokens = _tokenize(llm)(prompt.text)
    prefix, suffix = DOC[prompt.prefix_start : CURSOR], DOC[CURSOR : prompt.suffix_end]
    assert (prefix, suffix) == (DOC[:CURSOR], DOC[CURSOR:])
    assert tokens == _expected_tokens(llm, template, prefix, suffix)
    assert llm.detokenize(tokens, special=True).decode() == prompt.text


def test_split_markers_still_round_trip_as_text(vocab: Callable[[str], llama_cpp.Llama]) -> None:
    llm = vocab("qwen2")
    prompt = build_prompt(DOC, CURSOR, FAMILIES["qwen2.5-coder"], budget_tokens=200)
    tokens = _tokenize(llm)(prompt.text)
    assert llm.detokenize(tokens, special=True).decode() == prompt.text


def test_prefix_only_prompt_has_no_markers(vocab: Callable[[str], llama_cpp.Llama]) -> None:
    llm = vocab("starcoder")
    tokens = _tokenize(llm)(build_prompt(DOC, CURSOR, None, budget_tokens=200).text)
    starcoder = FAMILIES["starcoder"]
    marker_ids = _expected_tokens(llm, starcoder, "", "")
    assert tokens == _tokenize(llm)(DOC[:CURSOR])
    assert not set(marker_ids) & set(tokens)


@pytest.mark.parametrize(
    ("vocab_name", "expected"),
    [
        pytest.param("starcoder", FAMILIES["starcoder"], id="starcoder2-architecture"),
        pytest.param("deepseek-coder", FAMILIES["deepseek-coder"], id="deepseek-coder-name"),
        pytest.param("qwen2", None, id="qwen2-is-not-a-coder"),
        pytest.param("llama-spm", None, id="llama-has-no-fim"),
    ],
)
def test_template_from_real_metadata(
    vocab: Callable[[str], llama_cpp.Llama], vocab_name: str, expected: FimTemplate | None
) -> None:
    llm = vocab(vocab_name)
    template = template_from_gguf(llm.metadata, _token_text(llm), f"ggml-vocab-{vocab_name}.gguf")
    assert template == expected


def test_tiny_fim_model_loads_and_generates(tmp_path: Path) -> None:
    path = write_tiny_fim_model(tmp_path / "tiny-fim.gguf", seed=7)
    assert path.stat().st_size < 1_000_000
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, seed=7, verbose=False)
    try:
        template = template_from_gguf(llm.metadata, _token_text(llm), path.name)
        assert template == FimTemplate("gguf", *FIM_MARKERS, stop=("</s>",))
        assert marker_problems(template, _tokenize(llm)) == []

        prompt = build_prompt(DOC, CURSOR, template, budget_tokens=100)
        tokens = _tokenize(llm)(prompt.text)
        prefix, suffix = DOC[prompt.prefix_start : CURSOR], DOC[CURSOR : prompt.suffix_end]
        assert tokens == _expected_tokens(llm, template, prefix, suffix)

        out = llm.create_completion(prompt.text, max_tokens=6, temperature=0.0)
        assert isinstance(out, dict)
        assert out["usage"]["prompt_tokens"] == len(tokens) + 1  # the BOS token
        assert out["usage"]["completion_tokens"] > 0
    finally:
        llm.close()
