"""Model cards: every card parses, and every FIM format it names is one the prompt builder lays out."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import pytest

from lsp_server.completion.prompt import FAMILIES, build_prompt, template_from_gguf
from lsp_server.models.cards import ORDERS, CardError, find_card, load_cards, parse_card

REPO = Path(__file__).resolve().parents[2]
VOCAB_DIR = REPO / ".cache" / "vocab"
# Families whose markers are real tokens of a vocab-only GGUF from llama-cpp-python's sdist.
VOCAB_OF_FAMILY = {"starcoder": "starcoder", "deepseek-coder": "deepseek-coder"}


def test_cards_cover_the_models_the_issue_names() -> None:
    names = {card.name for card in load_cards()}
    assert names >= {
        "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "qwen2.5-coder-7b", "codellama-7b", "codellama-13b",
        "mistral-7b-instruct", "codestral-22b", "starcoder2-3b", "starcoder2-7b", "deepseek-coder-1.3b",
        "deepseek-coder-6.7b", "gemma-3-270m",
    }  # fmt: skip
    assert len(list((REPO / "models").glob("*.toml"))) == len(names)  # one card per file, none unparsed


def test_every_card_is_complete() -> None:
    for card in load_cards():
        assert card.title and card.license and card.parameters, card.name
        assert card.context_length >= 2048, card.name
        for quant in card.quants:
            assert quant.size > 0, (card.name, quant.name)
            assert quant.package or all(u.startswith("https://huggingface.co/") for u in quant.urls), card.name
            assert quant.file.endswith(".gguf")
        assert ("completion" in card.roles) == (card.fim is not None or card.family == "gemma3"), card.name


def test_chat_only_model_has_no_fim() -> None:
    mistral = find_card("mistral-7b-instruct")
    assert mistral.roles == ("chat",)
    assert mistral.fim is None


def test_every_fim_format_is_a_template_the_prompt_builder_uses() -> None:
    for card in load_cards():
        if card.fim is None:
            assert card.family not in FAMILIES
            continue
        fim = card.fim
        assert fim.order in ORDERS
        template = FAMILIES[card.family]
        assert (template.prefix, template.suffix, template.middle, template.stop) == (
            fim.prefix,
            fim.suffix,
            fim.middle,
            fim.stop,
        ), f"{card.name} disagrees with another card of family {card.family}"
        assert template.suffix_first == (fim.order == "suffix-first")
        text = build_prompt("def f(x):\n    return x\n", 10, template, budget_tokens=100).text
        first, second = (fim.suffix, fim.prefix) if fim.order == "suffix-first" else (fim.prefix, fim.suffix)
        assert text.startswith(first)
        assert text.index(second) > 0
        assert text.endswith(fim.middle)
        # The card's name patterns pick its family for a GGUF that has no fim_* metadata.
        assert template_from_gguf({"general.name": card.title}, lambda _: "", "model.gguf") == template


@pytest.mark.parametrize("family", sorted(VOCAB_OF_FAMILY))
def test_fim_markers_are_single_tokens_of_the_real_vocabulary(family: str) -> None:
    path = VOCAB_DIR / f"ggml-vocab-{VOCAB_OF_FAMILY[family]}.gguf"
    assert path.is_file(), f"{path} is missing: `make test` extracts the vocab-only GGUFs"
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        cards = [card for card in load_cards() if card.family == family]
        assert cards
        for card in cards:
            assert card.fim is not None
            for marker in (card.fim.prefix, card.fim.suffix, card.fim.middle):
                assert len(llm.tokenize(marker.encode(), add_bos=False, special=True)) == 1, (card.name, marker)
    finally:
        llm.close()


GOOD = """
name = "m"
title = "M"
family = "starcoder"
roles = ["completion"]
parameters = "1B"
context_length = 4096
license = "MIT"
[fim]
prefix = "<p>"
suffix = "<s>"
middle = "<m>"
order = "prefix-first"
[[quant]]
name = "Q4_K_M"
file = "m.gguf"
size = 10
urls = ["https://huggingface.co/x/y/resolve/main/m.gguf"]
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(GOOD.replace('order = "prefix-first"', 'order = "middle-first"'), "fim.order", id="order"),
        pytest.param(GOOD.replace('roles = ["completion"]', 'roles = ["fim"]'), "roles", id="role"),
        pytest.param(GOOD.replace("size = 10", 'size = "10"'), "'size'", id="size-type"),
        pytest.param(GOOD.replace('urls = ["https', 'mirrors = ["https'), "neither urls", id="no-source"),
        pytest.param(GOOD + 'sha256 = "abc"\n', "64 hex", id="bad-sha"),
        pytest.param(GOOD.split("[[quant]]")[0], "[[quant]]", id="no-quant"),
        pytest.param(GOOD.replace("name = ", "name = = "), "m.toml", id="not-toml"),
    ],
)
def test_bad_cards_are_refused_with_the_field_named(text: str, message: str) -> None:
    with pytest.raises(CardError, match=r"m\.toml") as raised:
        parse_card(text, "m.toml")
    assert message in str(raised.value)


def test_quant_lookup() -> None:
    card = find_card("Qwen2.5-Coder-1.5B")
    assert card.quant().name == "Q4_K_M"
    assert card.quant("q8_0").file.endswith("Q8_0.gguf")
    with pytest.raises(CardError, match="known: Q4_K_M, Q6_K, Q8_0"):
        card.quant("Q2_K")
    with pytest.raises(CardError, match="no model card"):
        find_card("gpt-5")
