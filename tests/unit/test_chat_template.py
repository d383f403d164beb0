"""Chat prompts as text: the GGUF's own chat template, else plain turns; and the local model rendering them."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from lsp_server.backends import BackendError, ChatPrompt, Generation
from lsp_server.backends.chat_template import ChatTemplate, chat_template_of, plain_turns, render_chat
from lsp_server.backends.local import LocalBackend
from lsp_server.config import Settings
from tests.tiny_gguf import write_tiny_fim_model

CHATML = (
    "{{ bos_token }}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TERSE = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}"
"""Each message's text and EOS: a prompt of a few tokens."""
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?\n"}]


def test_plain_turns() -> None:
    assert plain_turns(MESSAGES) == "### System\nBe brief.\n\n### User\nHi?\n\n### Assistant\n"


def test_without_a_template_chat_is_plain_turns_that_stop_at_the_next_turn() -> None:
    prompt = render_chat(ChatPrompt(MESSAGES, 64, stop=("END",)), None)
    assert prompt.text == plain_turns(MESSAGES)
    assert (prompt.max_tokens, prompt.stop) == (64, ("END", "\n### User", "\n### System"))


def test_a_template_renders_up_to_the_assistant_turn_without_bos_and_stops_at_eos() -> None:
    prompt = render_chat(ChatPrompt(MESSAGES, 64), ChatTemplate(CHATML, bos="<s>", eos="<|im_end|>"))
    assert prompt.text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?\n<|im_end|>\n<|im_start|>assistant\n"
    )
    assert prompt.stop == ("<|im_end|>",)


def test_a_template_that_refuses_the_conversation_is_a_backend_error() -> None:
    refusing = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
    with pytest.raises(BackendError, match="no system role"):
        render_chat(ChatPrompt(MESSAGES, 64), ChatTemplate(refusing, bos="", eos=""))


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param({}, None, id="no-template"),
        pytest.param({"tokenizer.chat_template": "{% if %}"}, None, id="broken-template-is-ignored"),
        pytest.param(
            {"tokenizer.chat_template": CHATML, "tokenizer.ggml.bos_token_id": "1", "tokenizer.ggml.eos_token_id": "2"},
            ("<tok1>", "<tok2>"),
            id="special-tokens-by-id",
        ),
        pytest.param({"tokenizer.chat_template": CHATML}, ("", ""), id="no-special-tokens"),
    ],
)
def test_chat_template_of_gguf_metadata(metadata: dict[str, str], expected: tuple[str, str] | None) -> None:
    template = chat_template_of(metadata, lambda token: f"<tok{token}>")
    assert (None if template is None else (template.bos, template.eos)) == expected


GEMMA = {"general.basename": "gemma-3", "general.name": "Gemma 3 270m", "general.architecture": "gemma3"}
SPECIAL = {"tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.eos_token_id": 1}


def gemma_token(token: int) -> str:
    return {1: "<eos>", 2: "<bos>"}[token]


def test_without_a_gguf_template_the_model_card_names_gemmas_turns_and_folds_the_system_prompt_in() -> None:
    template = chat_template_of({**GEMMA, **SPECIAL}, gemma_token, "gemma-3-270m-q4_k_m.gguf")
    assert template is not None and template.origin == "model card gemma-3-270m"
    prompt = render_chat(ChatPrompt(MESSAGES, 64, reply_start="Explanation: "), template)
    # Gemma has no system role: the instruction opens the first user turn (as Google's template writes it).
    assert prompt.text == ("<start_of_turn>user\nBe brief.\n\nHi?<end_of_turn>\n<start_of_turn>model\nExplanation: ")
    assert prompt.stop == ("<end_of_turn>", "<start_of_turn>", "<eos>")


@pytest.mark.parametrize(
    ("metadata", "file_name", "origin"),
    [
        pytest.param({**GEMMA, **SPECIAL, "tokenizer.chat_template": CHATML}, "g.gguf", "the GGUF", id="gguf-first"),
        pytest.param(SPECIAL, "gemma-2-2b-it.Q4_K_M.gguf", "model card gemma-3-270m", id="by-file-name"),
        pytest.param({"general.name": "Qwen2.5 Coder 7B", **SPECIAL}, "q.gguf", None, id="no-card-no-template"),
    ],
)
def test_where_the_chat_template_comes_from(metadata: dict[str, object], file_name: str, origin: str | None) -> None:
    template = chat_template_of(metadata, gemma_token, file_name)
    assert (None if template is None else template.origin) == origin


@pytest.mark.parametrize(
    ("template", "prompt_tokens"),
    [
        # BOS (one: the template's), "H", "i" (the tiny vocabulary has a token per character), EOS.
        pytest.param(TERSE, 4, id="gguf-template"),
        pytest.param(None, len(plain_turns([{"role": "user", "content": "Hi"}])) + 1, id="plain-turns"),
    ],
)
async def test_the_local_model_renders_chat_with_its_own_template(
    tmp_path: Path, template: str | None, prompt_tokens: int
) -> None:
    path = write_tiny_fim_model(tmp_path / "tiny-chat.gguf", chat_template=template)
    backend = LocalBackend(Settings(context_size=512), lambda: str(path))
    await backend.start()
    try:
        report = Generation()
        prompt = ChatPrompt([{"role": "user", "content": "Hi"}], max_tokens=4)
        _ = [chunk async for chunk in backend.stream(prompt, threading.Event(), report)]
        assert report.usage.prompt_tokens == prompt_tokens
    finally:
        backend.close()
