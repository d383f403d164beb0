"""Chat messages as one text prompt: through the model's own chat template, as llama-cpp-python's
`create_chat_completion` renders them, or as plain turns when the GGUF has no template."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

import jinja2

from lsp_server.backends import BackendError, ChatPrompt, TextPrompt

log = logging.getLogger(__name__)

PLAIN_STOP = ("\n### User", "\n### System")
"""Where a reply to plain turns ends: the model starting the next turn."""


class ChatTemplate:
    """A GGUF's chat template (`tokenizer.chat_template`), compiled, with the special tokens it names."""

    def __init__(self, source: str, bos: str, eos: str) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.bos = bos
        self.eos = eos
        self._formatter = Jinja2ChatFormatter(template=source, eos_token=eos, bos_token=bos)

    def render(self, messages: list[dict[str, str]]) -> str:
        """The conversation up to the assistant's turn, without the BOS token the generation adds itself."""
        text = str(self._formatter(messages=cast(Any, messages)).prompt)
        # llama-cpp-python tokenizes a rendered chat without adding BOS; tandem's generation always adds it.
        return text[len(self.bos) :] if self.bos and text.startswith(self.bos) else text


def chat_template_of(metadata: Mapping[str, Any], token_text: Callable[[int], str]) -> ChatTemplate | None:
    """The model's chat template from its GGUF metadata; None when it has none (or one Jinja cannot compile)."""
    source = metadata.get("tokenizer.chat_template")
    if not source:
        return None

    def special(kind: str) -> str:
        token = int(metadata.get(f"tokenizer.ggml.{kind}_token_id", -1))
        return token_text(token) if token >= 0 else ""

    try:
        return ChatTemplate(str(source), bos=special("bos"), eos=special("eos"))
    except jinja2.TemplateError as exc:  # plain turns still work
        log.warning("chat template ignored, plain turns used instead: %s", exc)
        return None


def render_chat(prompt: ChatPrompt, template: ChatTemplate | None) -> TextPrompt:
    """`prompt` as the text prompt a model with `template` (None: no template) continues with its reply."""
    if template is None:
        return TextPrompt(plain_turns(prompt.messages), prompt.max_tokens, prompt.stop + PLAIN_STOP)
    try:
        text = template.render(prompt.messages)
    except (jinja2.TemplateError, ValueError, TypeError) as exc:  # ValueError: the template refused (raise_exception)
        raise BackendError(f"the model's chat template cannot render the request: {exc}") from exc
    # The end of a turn is an end-of-generation token, which stops generation; its text stops it as well.
    return TextPrompt(text, prompt.max_tokens, prompt.stop + ((template.eos,) if template.eos else ()))


def plain_turns(messages: list[dict[str, str]]) -> str:
    """Chat messages as `### Role` turns, for a model without a chat template."""
    turns = [f"### {m['role'].capitalize()}\n{m['content'].strip()}\n" for m in messages]
    return "\n".join(turns) + "\n### Assistant\n"
