"""`tandem models`: list, pull, verify, use and info, for a person at a terminal."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

from lsp_server import config
from lsp_server.completion.prompt import template_from_gguf
from lsp_server.models import fit
from lsp_server.models.cards import Card, CardError, Quant, chat_card, find_card, load_cards
from lsp_server.models.gguf import Gguf, GgufError, read_gguf
from lsp_server.models.store import (
    PullError,
    expected_sha256,
    partial_path,
    pull,
    sha256_of,
)


def models_dir() -> Path:
    """Where `tandem models pull` puts files: `<data dir>/models`."""
    return config.data_dir() / "models"


def _settings() -> config.Settings:
    settings, problems = config.resolve(None, saved=config.saved_settings())
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    return settings


def _split(spec: str) -> tuple[Card, Quant]:
    name, _, quant = spec.partition(":")
    card = find_card(name)
    return card, card.quant(quant or None)


def _verdict(need: fit.Estimate | None, size: int, vram: int | None, ram: int | None) -> str:
    """Where a model would run; `need` is None before download, when only the file size is known."""
    if need is None:
        # Not downloaded: the file size stands for the weights, a fifth more for KV cache and buffers.
        total = size + size // 5
        if vram is not None and total <= vram:
            return "~fits GPU"
        if ram is not None and total > ram + (vram or 0):
            return "~too large"
        return "~GPU partly" if vram else "~fits CPU"
    if vram is not None:
        layers = fit.gpu_layers(need, vram)
        if layers == -1:
            return "fits GPU"
        if layers > 0:
            return f"GPU {layers}/{need.layers} layers"
    if ram is not None and fit.ram_needed(need, 0) > ram:
        return "too large"
    return "fits CPU" if vram is None else "CPU only"


def _estimate(file: Path, context: int) -> fit.Estimate | None:
    try:
        return fit.estimate(read_gguf(file), context) if file.exists() else None
    except GgufError:
        return None


def cmd_list(args: argparse.Namespace) -> int:
    """Print every card: downloaded, active, size, fit verdict."""
    settings = _settings()
    folder = models_dir()
    vram, ram = fit.free_vram(), fit.available_memory()
    active = [(settings.model_path, "completion"), (settings.chat_model_path, "chat")]
    rows = []
    for card in load_cards():
        for quant in card.quants:
            file = folder / quant.file
            partial = partial_path(file)
            state = (
                "yes"
                if file.exists()
                else f"partial {partial.stat().st_size * 100 // quant.size}%"
                if (partial.exists())
                else "-"
            )
            roles = [role for path, role in active if path and Path(path) == file]
            if quant.package is not None and not file.exists():  # the embedded default serves unset roles
                state = "embedded" if importlib.util.find_spec(quant.package.replace("-", "_")) else "-"
                roles = [role for path, role in active if path is None and state == "embedded"]
            rows.append({
                "name": f"{card.name}:{quant.name}",
                "roles": "+".join(card.roles),
                "size": fit.gib(quant.size),
                "downloaded": state,
                "active": ",".join(roles) or "",
                "fit": _verdict(_estimate(file, settings.context_size), quant.size, vram, ram),
                "license": card.license,
            })  # fmt: skip
    if args.json:
        print(json.dumps({"models": rows, "folder": str(folder), "freeVram": vram, "availableMemory": ram}))
        return 0
    columns = ["name", "roles", "size", "downloaded", "active", "fit", "license"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip())
    where = f"free VRAM {fit.gib(vram)}" if vram is not None else "no CUDA GPU found"
    memory = f", {fit.gib(ram)} RAM available" if ram is not None else ""
    print(f"\nfiles in {folder}; {where}{memory}; fit at context {settings.context_size} (~: from the file size)")
    return 0


class _Bar:
    """A progress line on stderr, redrawn at most ten times a second."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.drawn = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.drawn < 0.1 and done != total:
            return
        self.drawn = now
        rate = done / max(now - self.started, 1e-3)
        of = f" / {fit.gib(total)} {done * 100 // total:3d}%" if total else ""
        sys.stderr.write(f"\r{self.label}: {fit.gib(done)}{of}  {rate / fit.MIB:.1f} MiB/s ")
        sys.stderr.flush()


def cmd_pull(args: argparse.Namespace) -> int:
    """Download a card's file into the data dir."""
    card, quant = _split(args.name)
    bar = _Bar(quant.file)
    try:
        path = pull(card, quant, models_dir(), verify=not args.no_verify, progress=bar)
    except PullError as exc:
        sys.stderr.write("\n" if bar.drawn else "")
        print(f"tandem models pull: {exc}", file=sys.stderr)
        return 1
    sys.stderr.write("\n" if bar.drawn else "")
    print(f"{card.name}:{quant.name} ready at {path}")
    print(f"use it: tandem models use {card.name}:{quant.name}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check each downloaded file's checksum and GGUF header."""
    folder = models_dir()
    known = {q.file: q for c in load_cards() for q in c.quants}
    files = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
    if not files:
        print(f"no models in {folder}; tandem models pull NAME")
        return 0
    bad = 0
    for file in files:
        problems: list[str] = []
        try:
            model = read_gguf(file)
            problems.extend(model.warnings)
        except GgufError as exc:
            problems.append(str(exc))
            model = None
        quant = known.get(file.name)
        expected = expected_sha256(quant, file) if quant is not None else None
        if expected is None:
            check = "no known checksum"
        elif sha256_of(file) == expected:
            check = "sha256 ok"
        else:
            problems.append(f"sha256 mismatch (expected {expected}); pull it again")
            check = "sha256 MISMATCH"
        header = f"{model.architecture} {model.quantization}" if model is not None else "unreadable"
        print(f"{'FAIL' if problems else 'ok  '}  {file.name}: {header}, {check}")
        for problem in problems:
            print(f"      {problem}")
        bad += bool(problems)
    return 1 if bad else 0


def cmd_use(args: argparse.Namespace) -> int:
    """Save a downloaded model as the completion (or chat) model the server loads."""
    card, quant = _split(args.name)
    file = models_dir() / quant.file
    if not file.exists():
        print(
            f"{card.name}:{quant.name} is not downloaded: tandem models pull {card.name}:{quant.name}", file=sys.stderr
        )
        return 1
    role = args.role or ("completion" if "completion" in card.roles else "chat")
    key = "local.modelPath" if role == "completion" else "local.chatModelPath"
    saved = config.saved_settings()
    saved[key] = str(file)
    path = config.data_dir() / config.SAVED_SETTINGS
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(saved, indent=2) + "\n")
    tmp.replace(path)
    print(f"{key} = {file} (saved in {path}; editor settings and TANDEM_MODEL still override it)")
    return 0


def describe(model: Gguf, context_size: int) -> dict[str, Any]:
    """What `info` shows about a GGUF, as a JSON-ready object."""
    template = template_from_gguf(model.string_metadata(), model.token_text, Path(model.path).name)
    need = fit.estimate(model, context_size)
    chat = model.metadata.get("tokenizer.chat_template")
    keys = ("general.basename", "general.name", "general.architecture")
    names = [str(model.metadata[k]) for k in keys if k in model.metadata]
    card = None if chat else chat_card([*names, Path(model.path).name])
    return {
        "path": model.path,
        "name": model.metadata.get("general.name"),
        "architecture": model.architecture,
        "parameters": model.parameters,
        "quantization": model.quantization,
        "fileSize": model.file_size,
        "warnings": list(model.warnings),
        "contextLength": model.arch("context_length"),
        "layers": model.arch("block_count"),
        "embedding": model.arch("embedding_length"),
        "heads": model.arch("attention.head_count"),
        "kvHeads": model.arch("attention.head_count_kv"),
        "fimTokens": model.fim_tokens(),
        "fim": None if template is None else {
            "family": template.family,
            "prefix": template.prefix,
            "suffix": template.suffix,
            "middle": template.middle,
            "order": "suffix-first" if template.suffix_first else "prefix-first",
        },
        "chatTemplate": chat if isinstance(chat, str) else None,
        "chatCard": None if card is None else card.name,
        "memory": {
            "contextSize": context_size,
            "weights": need.weights,
            "kvCache": need.kv_cache,
            "compute": need.compute,
            "total": need.total,
        },
    }  # fmt: skip


def _chat_line(template: str | None, card: str | None) -> str:
    if template:
        return f"{len(template)} characters: {template.strip().splitlines()[0][:60]}"
    return f"none in the GGUF; the model card {card}'s" if card else "none: plain turns"


def _count(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def cmd_info(args: argparse.Namespace) -> int:
    """Print a GGUF's metadata (read from its header only)."""
    try:
        model = read_gguf(args.path)
    except GgufError as exc:
        print(f"tandem models info: {exc}", file=sys.stderr)
        return 1
    for warning in model.warnings:
        print(f"tandem models info: warning: {model.path}: {warning}", file=sys.stderr)
    info = describe(model, args.context or _settings().context_size)
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
        return 0
    fim = info["fim"]
    chat = info["chatTemplate"]
    memory = info["memory"]
    lines = [
        ("file", f"{info['path']} ({fit.gib(info['fileSize'])})"),
        ("name", info["name"] or "-"),
        ("architecture", info["architecture"]),
        ("parameters", _count(info["parameters"]) if info["parameters"] else "none (vocabulary only)"),
        ("quantization", info["quantization"] or "-"),
        ("context", f"{info['contextLength']} tokens (trained)" if info["contextLength"] else "-"),
        ("layers", f"{info['layers']}, embedding {info['embedding']}, heads {info['heads']}/{info['kvHeads']} (kv)"),
        ("FIM tokens", ", ".join(f"{k}={v!r}" for k, v in info["fimTokens"].items()) or "none in metadata"),
        ("FIM format", f"{fim['family']} ({fim['order']})" if fim else "none: prefix-only completion"),
        ("chat template", _chat_line(chat, info["chatCard"])),
        (
            "memory",
            f"{fit.gib(memory['total'])} at context {memory['contextSize']} (weights {fit.gib(memory['weights'])},"
            f" KV cache {fit.gib(memory['kvCache'])}, buffers {fit.gib(memory['compute'])})",
        ),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key.ljust(width)}  {value}")
    return 0


def main(argv: list[str]) -> int:
    """Entry point of `tandem models ...`."""
    parser = argparse.ArgumentParser(prog="tandem models", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="model cards: downloaded, active, size, fits your GPU")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=cmd_list)
    pulling = commands.add_parser("pull", help="download NAME[:QUANT] (resumable, sha256-verified)")
    pulling.add_argument("name", metavar="NAME[:QUANT]")
    pulling.add_argument("--no-verify", action="store_true", help="accept a file no checksum is known for")
    pulling.set_defaults(run=cmd_pull)
    commands.add_parser("verify", help="checksums and GGUF headers of downloaded models").set_defaults(run=cmd_verify)
    using = commands.add_parser("use", help="make NAME[:QUANT] the model the server loads")
    using.add_argument("name", metavar="NAME[:QUANT]")
    using.add_argument("--role", choices=["completion", "chat"], help="default: completion when the card allows it")
    using.set_defaults(run=cmd_use)
    info = commands.add_parser("info", help="metadata of any GGUF file (header only)")
    info.add_argument("path")
    info.add_argument("--context", type=int, help="context size for the memory estimate")
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=cmd_info)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except CardError as exc:
        print(f"tandem models: {exc}", file=sys.stderr)
        return 2
