"""Memory fit: the estimate against llama.cpp's measured RSS, and the GPU layer choice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lsp_server.backends import BackendError
from lsp_server.config import Settings
from lsp_server.models.fit import MIB, Estimate, check_model_file, estimate, gpu_layers, ram_needed, vram_needed
from lsp_server.models.gguf import read_gguf
from tests.loopback import embedded_model

# Loads the model as LocalBackend does and runs one short completion; prints the RSS growth.
_MEASURE = """
import json, sys, llama_cpp
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS"))
before = rss()
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=int(sys.argv[2]), n_batch=512, flash_attn=True, verbose=False)
llm.create_completion("def fibonacci(n):\\n" * 40, max_tokens=8, temperature=0.0)
print(json.dumps({"growth": rss() - before, "n_ctx": llm.n_ctx()}))
"""


@pytest.mark.parametrize("context", [2048, 32768])
def test_estimate_matches_measured_rss(context: int) -> None:
    path = embedded_model()
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), str(context)], capture_output=True, text=True, check=True
    ).stdout
    measured = json.loads(out.splitlines()[-1])
    assert measured["n_ctx"] == context
    need = estimate(read_gguf(path), context)
    assert need.total == pytest.approx(measured["growth"], rel=0.25), (need, measured["growth"] / MIB)


def test_kv_cache_grows_with_context() -> None:
    model = read_gguf(embedded_model())
    small, large = estimate(model, 2048), estimate(model, 32768)
    assert large.kv_cache == 16 * small.kv_cache
    assert small.kv_cache == 18 * 2048 * 1 * (256 + 256) * 2  # layers x context x kv heads x (K + V dims) x f16
    assert estimate(model, 2000).kv_cache == small.kv_cache  # padded to 256 like llama.cpp
    assert small.weights == large.weights == model.tensor_bytes


NEED = Estimate(weights=7 * 2**30, kv_cache=2**30, compute=512 * MIB, layers=31)  # 8 GiB over 32 slices


@pytest.mark.parametrize(
    ("vram", "layers"),
    [
        pytest.param(24 * 2**30, -1, id="all-fit"),
        pytest.param(8 * 2**30 + 768 * MIB, -1, id="just-fits"),
        pytest.param(4 * 2**30 + 768 * MIB, 16, id="half"),
        pytest.param(800 * MIB, 0, id="none"),
        pytest.param(0, 0, id="no-free-vram"),
    ],
)
def test_gpu_layers_for_free_vram(vram: int, layers: int) -> None:
    assert gpu_layers(NEED, vram) == layers


def test_memory_needed_on_each_side() -> None:
    assert vram_needed(NEED, -1) == 8 * 2**30 + 768 * MIB
    assert vram_needed(NEED, 16) == 4 * 2**30 + 768 * MIB
    assert ram_needed(NEED, -1) == NEED.compute
    assert ram_needed(NEED, 0) == NEED.total
    assert ram_needed(NEED, 16) == 16 * NEED.per_layer + NEED.compute


def test_gpu_layers_of_the_embedded_model(caplog: pytest.LogCaptureFixture) -> None:
    path = str(embedded_model())
    need = estimate(read_gguf(path), Settings().context_size)
    assert check_model_file(path, Settings(), gpu_offload=False) == -1  # CPU build: nothing to choose
    assert check_model_file(path, Settings(), gpu_offload=True) == -1  # no VRAM reading (no CUDA): all
    assert check_model_file(path, Settings(), gpu_offload=True, vram=8 * 2**30) == -1
    half = vram_needed(need, 9)
    with caplog.at_level("INFO", logger="lsp_server.models.fit"):
        assert check_model_file(path, Settings(), gpu_offload=True, vram=half) == 9
    assert "9 of 18 layers fit" in caplog.text
    assert check_model_file(path, Settings(n_gpu_layers=7), gpu_offload=True, vram=half) == 7  # the user's choice
    with pytest.raises(BackendError, match=r'too large for GPU memory: .*nGpuLayers=-1 .* "auto" or at most 9'):
        check_model_file(path, Settings(n_gpu_layers=-1), gpu_offload=True, vram=half)


def test_context_too_large_for_memory_is_refused_before_loading() -> None:
    with pytest.raises(BackendError, match=r"too large for memory: .* KV cache .* at context 16777216"):
        check_model_file(str(embedded_model()), Settings(context_size=2**24), gpu_offload=False)


def test_an_unfinished_download_is_never_loaded(tmp_path: Path) -> None:
    partial = tmp_path / "model.gguf.partial"
    with embedded_model().open("rb") as model:
        partial.write_bytes(model.read(2**20))
    with pytest.raises(BackendError, match="unfinished download"):
        check_model_file(str(partial), Settings(), gpu_offload=False)
