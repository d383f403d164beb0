"""Chat messages as one text prompt: through the model's own chat template, as llama-cpp-python's
`create_chat_completion` renders them (from the GGUF, else from its family's model card), or as plain turns."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

import jinja2

from lsp_server.backends import BackendError, ChatPrompt, TextPrompt
from lsp_server.models.cards import chat_card

log = logging.getLogger(__name__)

PLAIN_STOP = ("\n### User", "\n### System")
"""Where a reply to plain turns ends: the model starting the next turn."""


_NAME_KEYS = ("general.basename", "general.name", "general.architecture")


class ChatTemplate:
    """A chat template (Jinja, as `tokenizer.chat_template` holds it), compiled, with the special tokens it names
    and the strings that end the model's turn."""

    def __init__(self, source: str, bos: str, eos: str, stop: tuple[str, ...] = (), origin: str = "the GGUF") -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.bos = bos
        self.eos = eos
        self.stop = tuple(dict.fromkeys((*stop, *((eos,) if eos else ()))))
        """The end of a turn: the card's strings and EOS."""
        self.origin = origin
        """Where the template came from: the GGUF, or a model card."""
        self._formatter = Jinja2ChatFormatter(template=source, eos_token=eos, bos_token=bos)

    def render(self, messages: list[dict[str, str]]) -> str:
        """The conversation up to the assistant's turn, without the BOS token the generation adds itself."""
        text = str(self._formatter(messages=cast(Any, messages)).prompt)
        # llama-cpp-python tokenizes a rendered chat without adding BOS; tandem's generation always adds it.
        return text[len(self.bos) :] if self.bos and text.startswith(self.bos) else text


def chat_template_of(
    metadata: Mapping[str, Any], token_text: Callable[[int], str], file_name: str = ""
) -> ChatTemplate | None:
    """The model's chat template: from its GGUF metadata, else from the model card of its family (matched by the
    names in its metadata, then its file name); None when neither has one (or one Jinja cannot compile)."""
    source = metadata.get("tokenizer.chat_template")
    stop: tuple[str, ...] = ()
    origin = "the GGUF"
    if not source:
        card = chat_card([str(metadata[k]) for k in _NAME_KEYS if k in metadata] + [file_name])
        if card is None or card.chat is None:
            return None
        source, stop, origin = card.chat.template, card.chat.stop, f"model card {card.name}"

    def special(kind: str) -> str:
        token = int(metadata.get(f"tokenizer.ggml.{kind}_token_id", -1))
        return token_text(token) if token >= 0 else ""

    try:
        return ChatTemplate(str(source), bos=special("bos"), eos=special("eos"), stop=stop, origin=origin)
    except jinja2.TemplateError as exc:  # plain turns still work
        log.warning("chat template of %s ignored, plain turns used instead: %s", origin, exc)
        return None


def render_chat(prompt: ChatPrompt, template: ChatTemplate | None) -> TextPrompt:
    """`prompt` as the text prompt a model with `template` (None: no template) continues with its reply."""
    if template is None:
        text = plain_turns(prompt.messages) + prompt.reply_start
        return TextPrompt(text, prompt.max_tokens, prompt.stop + PLAIN_STOP)
    try:
        text = template.render(prompt.messages) + prompt.reply_start
    except (jinja2.TemplateError, ValueError, TypeError) as exc:  # ValueError: the template refused (raise_exception)
        raise BackendError(f"the model's chat template cannot render the request: {exc}") from exc
    # The end of a turn is an end-of-generation token, which stops generation; its text stops it as well.
    return TextPrompt(text, prompt.max_tokens, prompt.stop + template.stop)


def plain_turns(messages: list[dict[str, str]]) -> str:
    """Chat messages as `### Role` turns, for a model without a chat template."""
    turns = [f"### {m['role'].capitalize()}\n{m['content'].strip()}\n" for m in messages]
    return "\n".join(turns) + "\n### Assistant\n"
