"""The GGUF header reader against llama.cpp's own reading of the same files."""

from __future__ import annotations

import os
from pathlib import Path

import llama_cpp
import pytest

from lsp_server.models.gguf import GgufError, read_gguf
from tests.loopback import embedded_model
from tests.tiny_gguf import FIM_MARKERS, write_tiny_fim_model

VOCAB_DIR = Path(__file__).resolve().parents[2] / ".cache" / "vocab"
VOCABS = ["starcoder", "deepseek-coder", "qwen2", "llama-spm", "refact", "gemma-4"]


def _same_as_llama_cpp(path: Path) -> None:
    model = read_gguf(path)
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        ours = model.string_metadata()
        theirs = dict(llm.metadata)
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():
            if isinstance(model.metadata[key], float):
                assert float(ours[key]) == pytest.approx(float(value), rel=1e-6), key
            elif isinstance(model.metadata[key], bool):
                assert ours[key].lower() == value.lower(), key
            else:
                assert ours[key] == value, key
        for token in (0, 1, 2, llm.n_vocab() - 1):
            assert model.token_text(token) == llm._model.token_get_text(token), token
        assert len(model.metadata["tokenizer.ggml.tokens"]) == llm.n_vocab()
    finally:
        llm.close()


def test_embedded_model_metadata() -> None:
    path = embedded_model()
    _same_as_llama_cpp(path)
    model = read_gguf(path)
    assert (model.architecture, model.quantization) == ("gemma3", "Q4_K_M")
    assert model.arch("block_count") == 18
    assert model.arch("context_length") == 32768
    assert 260e6 < model.parameters < 280e6  # "270M"
    assert model.tensor_count > 100
    assert 0 < model.file_size - model.tensor_bytes < 8 * 2**20  # the header is the rest
    assert model.fim_tokens() == {}
    assert model.warnings == ()


@pytest.mark.parametrize("name", VOCABS)
def test_vocab_only_metadata(name: str) -> None:
    path = VOCAB_DIR / f"ggml-vocab-{name}.gguf"
    assert path.is_file(), f"{path} is missing: `make test` extracts the vocab-only GGUFs"
    _same_as_llama_cpp(path)
    model = read_gguf(path)
    assert model.parameters == 0
    assert model.tensor_count == 0
    assert model.warnings == ()  # no tensors: nothing to be cut off


def test_fim_tokens_from_metadata(tmp_path: Path) -> None:
    model = read_gguf(write_tiny_fim_model(tmp_path / "tiny.gguf", seed=1))
    assert model.fim_tokens() == dict(zip(("pre", "suf", "mid"), FIM_MARKERS, strict=True))
    assert model.architecture == "llama"
    assert model.parameters > 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"PK\x03\x04" + b"\x00" * 64, "not a GGUF model file", id="zip"),
        pytest.param(b"GGUF", "not a GGUF model file", id="too-short"),
        pytest.param(b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") + (5).to_bytes(8, "little"),
                     "truncated", id="truncated-kv"),
        pytest.param(b"GGUF" + (1).to_bytes(4, "little") + b"\x00" * 32, "version 1", id="old-version"),
    ],
)  # fmt: skip
def test_unreadable_files_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(GgufError, match=message):
        read_gguf(path)


def test_missing_file() -> None:
    with pytest.raises(GgufError, match="cannot read"):
        read_gguf("/nonexistent/model.gguf")


@pytest.mark.timeout(20)  # opening a FIFO to read would wait for a writer forever
def test_fifo_and_directory_are_refused_before_opening(tmp_path: Path) -> None:
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    with pytest.raises(GgufError, match=r"not a regular file \(a FIFO\)"):
        read_gguf(fifo)
    with pytest.raises(GgufError, match=r"not a regular file \(a directory\)"):
        read_gguf(tmp_path)


def cut(path: Path, size: int) -> Path:
    """`path` cut to its first `size` bytes, as an interrupted copy leaves it."""
    with path.open("r+b") as handle:
        handle.truncate(size)
    return path


@pytest.mark.parametrize("cut_off", ["half", "one-byte"])
def test_truncated_tensor_data_is_a_warning(tmp_path: Path, cut_off: str) -> None:
    path = write_tiny_fim_model(tmp_path / "tiny.gguf")
    whole = path.stat().st_size
    assert read_gguf(path).warnings == ()
    kept = whole // 2 if cut_off == "half" else whole - 1
    model = read_gguf(cut(path, kept))
    assert model.fim_tokens()  # the header is whole: its metadata still reads
    assert model.warnings == (
        f"truncated: its tensors need {whole} bytes, the file has {kept}; download or convert it again",
    )


def test_an_unknown_version_is_a_warning(tmp_path: Path) -> None:
    path = write_tiny_fim_model(tmp_path / "tiny.gguf")
    with path.open("r+b") as handle:
        handle.seek(4)
        handle.write((999).to_bytes(4, "little"))
    model = read_gguf(path)
    assert model.version == 999 and model.architecture == "llama"
    assert model.warnings == ("GGUF version 999 is newer than this reader knows (3); what it shows may be wrong",)


CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{% endfor %}"


def write_metadata_only_gguf(path: Path) -> Path:
    """A GGUF without tensors whose metadata has every value type, FIM token ids and a chat template."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_name("Qwen2.5-Coder-1.5B")
    writer.add_chat_template(CHAT_TEMPLATE)
    writer.add_token_list(["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "x"])
    writer.add_uint32("tokenizer.ggml.fim_pre_token_id", 0)
    writer.add_uint32("tokenizer.ggml.fim_suf_token_id", 1)
    writer.add_uint32("tokenizer.ggml.fim_mid_token_id", 2)
    writer.add_int8("t.i8", -3)
    writer.add_uint16("t.u16", 65535)
    writer.add_int64("t.i64", -(2**40))
    writer.add_float64("t.f64", 0.25)
    writer.add_bool("t.bool", True)
    writer.add_array("t.ints", [1, 2, 3])
    writer.add_array("t.nested", [[1, 2], [3]])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_every_value_type_and_the_chat_template(tmp_path: Path) -> None:
    model = read_gguf(write_metadata_only_gguf(tmp_path / "meta.gguf"))
    meta = model.metadata
    assert (meta["t.i8"], meta["t.u16"], meta["t.i64"]) == (-3, 65535, -(2**40))
    assert (meta["t.f64"], meta["t.bool"]) == (0.25, True)
    assert meta["t.ints"] == [1, 2, 3]
    assert meta["t.nested"] == [[1, 2], [3]]
    assert meta["tokenizer.chat_template"] == CHAT_TEMPLATE
    assert model.fim_tokens() == {"pre": "<|fim_prefix|>", "suf": "<|fim_suffix|>", "mid": "<|fim_middle|>"}
