"""The `tandem` command: serve, demo, usage, models, eval, bench."""

from __future__ import annotations

import argparse
import logging
import os
import runpy
import sys
from pathlib import Path
from typing import BinaryIO


def _protocol_stdout() -> BinaryIO:
    """The LSP output stream on a private descriptor; fd 1 then points at the log.

    llama-cpp-python points fd 1 at /dev/null while it loads a model quietly, and C libraries
    print to it: neither may ever touch the protocol stream.
    """
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def _serve(args: argparse.Namespace) -> int:
    from lsp_server.server import create_server

    server = create_server()
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        server.start_tcp(host or "127.0.0.1", int(port))
    else:
        server.start_io(sys.stdin.buffer, _protocol_stdout())
    # pygls swallows the SystemExit of `exit`: the LSP exit code is ours to return.
    return 0 if server.shutdown_requested else 1


def _demo(args: argparse.Namespace) -> int:
    from lsp_server.tools.demo import run

    return run(model=args.model, fast=args.fast)


def _usage(args: argparse.Namespace) -> int:
    from lsp_server.tools import usage

    return usage.main(args.rest)


def _models(args: argparse.Namespace) -> int:
    from lsp_server.models.command import main as models

    return models(args.rest)


def _bench(args: argparse.Namespace) -> int:
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
    if not script.exists():
        print("tandem bench runs from a source checkout (benchmarks/run.py not found)", file=sys.stderr)
        return 2
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from lsp_server.tools import evaluate

    return evaluate.main(args.rest)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tandem` console script."""
    parser = argparse.ArgumentParser(prog="tandem", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="logging level on stderr (default INFO)")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="language server over stdio (default)")
    serve.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio")
    serve.set_defaults(run=_serve)
    demo = commands.add_parser("demo", help="type into a sample file and watch ghost text stream")
    demo.add_argument("--model", help="GGUF file (default: the embedded Gemma 3 270M)")
    demo.add_argument("--fast", action="store_true", help="type without human pauses")
    demo.set_defaults(run=_demo)
    passed_on = {
        "usage": (_usage, "token ledger totals (--json, --csv)"),
        "models": (_models, "model cards: list, pull, verify, use, info"),
        "bench": (_bench, "benchmarks (from a source checkout)"),
        "eval": (_eval, "completion quality on holes cut in real code, server vs raw model"),
    }
    for name, (run, text) in passed_on.items():
        commands.add_parser(name, help=text, add_help=False).set_defaults(run=run)
    # These commands parse their own options: everything after the name is theirs. (argparse's REMAINDER
    # rejects a first word that starts with "-", so `tandem usage --json` must not go through it.)
    argv = sys.argv[1:] if argv is None else list(argv)
    name_at = next((i for i, word in enumerate(argv) if word in passed_on), len(argv))
    args = parser.parse_args(argv[: name_at + 1])
    args.rest = argv[name_at + 1 :]
    from lsp_server.privacy import PasswordsHidden

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PasswordsHidden("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    logging.getLogger("pygls").setLevel(max(logging.WARNING, logging.getLogger().level))  # it logs every message
    if args.command is None:
        args = parser.parse_args(["serve"])
    return int(args.run(args))
