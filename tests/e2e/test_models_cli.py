"""`tandem models` as a person runs it: a subprocess with its own data dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lsp_server.models.cards import load_cards
from tests.loopback import embedded_model
from tests.tiny_gguf import write_tiny_fim_model
from tests.unit.test_gguf_meta import cut, write_metadata_only_gguf

REPO = Path(__file__).resolve().parents[2]
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def tandem(data_dir: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TANDEM_DATA_DIR": str(data_dir), "TANDEM_MODEL": ""}
    return subprocess.run(
        [sys.executable, "-m", "lsp_server", "models", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_list_shows_every_card(tmp_path: Path) -> None:
    run = tandem(tmp_path, "list")
    assert run.returncode == 0, run.stderr
    for card in load_cards():
        assert f"{card.name}:{card.quants[0].name}" in run.stdout
    assert f"files in {tmp_path / 'models'}" in run.stdout
    rows = json.loads(tandem(tmp_path, "list", "--json").stdout)["models"]
    assert {row["downloaded"] for row in rows if not row["name"].startswith("gemma-3-270m")} == {"-"}
    assert {row["fit"] for row in rows} <= {"~fits GPU", "~GPU partly", "~fits CPU", "~too large"}
    assert {row["fit"] for row in rows if row["size"].endswith("MiB")} <= {"~fits GPU", "~fits CPU"}


def test_info_reads_metadata(tmp_path: Path) -> None:
    run = tandem(tmp_path, "info", str(embedded_model()))
    assert run.returncode == 0, run.stderr
    assert "gemma3" in run.stdout and "Q4_K_M" in run.stdout and "268.1M" in run.stdout
    assert "prefix-only" in run.stdout
    info = json.loads(tandem(tmp_path, "info", "--json", "--context", "2048", str(embedded_model())).stdout)
    assert (info["architecture"], info["layers"], info["contextLength"]) == ("gemma3", 18, 32768)
    assert info["memory"]["kvCache"] == 18 * 2048 * 512 * 2
    vocab = json.loads(tandem(tmp_path, "info", "--json", str(REPO / ".cache/vocab/ggml-vocab-starcoder.gguf")).stdout)
    assert vocab["fim"]["family"] == "starcoder" and vocab["fimTokens"] == {}
    meta = tandem(tmp_path, "info", str(write_metadata_only_gguf(tmp_path / "meta.gguf")))
    assert "chat template  60 characters: {% for m in messages %}<|im_start|>" in meta.stdout, meta.stdout
    assert "FIM format     gguf (prefix-first)" in meta.stdout
    assert "FIM tokens     pre='<|fim_prefix|>', suf='<|fim_suffix|>', mid='<|fim_middle|>'" in meta.stdout
    missing = tandem(tmp_path, "info", str(tmp_path / "nope.gguf"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_info_refuses_a_fifo_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    run = tandem(tmp_path, "info", str(fifo), timeout=60)  # before the fix: waits for a writer forever
    assert run.returncode == 1
    assert f"tandem models info: {fifo}: not a regular file (a FIFO)" in run.stderr


@pytest.mark.parametrize("damage", ["half", "one-byte", "version-999"])
def test_info_warns_about_a_damaged_file(tmp_path: Path, damage: str) -> None:
    path = write_tiny_fim_model(tmp_path / "tiny.gguf")
    size = path.stat().st_size
    if damage == "version-999":
        with path.open("r+b") as handle:
            handle.seek(4)
            handle.write((999).to_bytes(4, "little"))
        expected = "GGUF version 999 is newer than this reader knows"
    else:
        kept = size // 2 if damage == "half" else size - 1
        cut(path, kept)
        expected = f"truncated: its tensors need {size} bytes, the file has {kept}"
    run = tandem(tmp_path, "info", str(path))
    assert run.returncode == 0, run.stderr
    assert f"tandem models info: warning: {path}: {expected}" in run.stderr
    assert "name           tiny-fim" in run.stdout  # what could be read is still shown
    info = json.loads(tandem(tmp_path, "info", "--json", str(path)).stdout)
    assert [expected in warning for warning in info["warnings"]] == [True]
    whole = json.loads(tandem(tmp_path, "info", "--json", str(write_tiny_fim_model(tmp_path / "whole.gguf"))).stdout)
    assert whole["warnings"] == []


def test_pull_verify_use_the_embedded_model(tmp_path: Path) -> None:
    rows = {r["name"]: r for r in json.loads(tandem(tmp_path, "list", "--json").stdout)["models"]}
    embedded = rows["gemma-3-270m:Q4_K_M"]  # nothing configured: the embedded default serves both roles
    assert (embedded["downloaded"], embedded["active"]) == ("embedded", "completion,chat")
    assert tandem(tmp_path, "use", "gemma-3-270m").returncode == 1  # not downloaded yet
    pulled = tandem(tmp_path, "pull", "gemma-3-270m")
    assert pulled.returncode == 0, pulled.stderr
    model = tmp_path / "models" / "gemma-3-270m-q4_k_m.gguf"
    assert model.is_file() and sorted(p.name for p in model.parent.iterdir()) == [model.name]

    verified = tandem(tmp_path, "verify")
    assert verified.returncode == 0 and "sha256 ok" in verified.stdout, verified.stdout

    used = tandem(tmp_path, "use", "gemma-3-270m")
    assert used.returncode == 0, used.stderr
    assert json.loads((tmp_path / "settings.json").read_text()) == {"local.modelPath": str(model)}
    rows = {r["name"]: r for r in json.loads(tandem(tmp_path, "list", "--json").stdout)["models"]}
    gemma = rows["gemma-3-270m:Q4_K_M"]
    assert (gemma["downloaded"], gemma["active"]) == ("yes", "completion")
    assert gemma["fit"] in ("fits GPU", "fits CPU")  # read from the file's header now

    (model.parent / "mistral-7b-instruct-v0.2.Q4_K_M.gguf").symlink_to(model)  # stands in for a downloaded file
    assert tandem(tmp_path, "use", "mistral-7b-instruct").returncode == 0  # a chat-only card: the chat role
    assert json.loads((tmp_path / "settings.json").read_text()) == {
        "local.modelPath": str(model),
        "local.chatModelPath": str(model.parent / "mistral-7b-instruct-v0.2.Q4_K_M.gguf"),
    }
    (model.parent / "mistral-7b-instruct-v0.2.Q4_K_M.gguf").unlink()

    with model.open("r+b") as handle:  # a flipped byte in the weights
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 0xFF]))
    broken = tandem(tmp_path, "verify")
    assert broken.returncode == 1 and f"sha256 mismatch (expected {GEMMA_SHA256})" in broken.stdout


def test_unknown_names_are_explained(tmp_path: Path) -> None:
    run = tandem(tmp_path, "pull", "gpt-5")
    assert run.returncode == 2 and "no model card 'gpt-5'; known: codellama-13b" in run.stderr
    run = tandem(tmp_path, "pull", "qwen2.5-coder-1.5b:Q2_K")
    assert run.returncode == 2 and "known: Q4_K_M, Q6_K, Q8_0" in run.stderr
