"""Will a model fit: memory for weights + KV cache + compute from GGUF metadata, and GPU layers for free VRAM;
the checks a model file passes before it is loaded."""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lsp_server.backends import BackendError
from lsp_server.config import Settings
from lsp_server.models.gguf import Gguf, GgufError, read_gguf

log = logging.getLogger(__name__)

MIB = 2**20
_BASE_OVERHEAD = 64 * MIB  # llama.cpp's context, graph and sampler state, measured on Gemma 3 270M
_VRAM_MARGIN = 256 * MIB  # the CUDA context and fragmentation


@dataclass(frozen=True)
class Estimate:
    """Bytes a model needs loaded at one context size."""

    weights: int
    kv_cache: int
    """f16 K and V for every layer at the (padded) context size."""
    compute: int
    """Output logits, activation scratch and llama.cpp's own state."""
    layers: int

    @property
    def total(self) -> int:
        """Everything together."""
        return self.weights + self.kv_cache + self.compute

    @property
    def per_layer(self) -> int:
        """Weights and KV cache of one layer (the output layer counted as one more)."""
        return -(-(self.weights + self.kv_cache) // (self.layers + 1))


def estimate(model: Gguf, context_size: int, batch: int = 512) -> Estimate:
    """Memory to load `model` with `context_size` tokens of f16 KV cache."""
    layers = int(model.arch("block_count") or 0)
    embedding = int(model.arch("embedding_length") or 0)
    heads = int(model.arch("attention.head_count") or 1)
    kv_heads = int(model.arch("attention.head_count_kv") or heads)
    key = int(model.arch("attention.key_length") or embedding // heads)
    value = int(model.arch("attention.value_length") or embedding // heads)
    context = -(-context_size // 256) * 256  # llama.cpp pads the context to 256
    kv_cache = layers * context * kv_heads * (key + value) * 2
    vocab = len(model.metadata.get("tokenizer.ggml.tokens") or []) or int(model.arch("vocab_size") or 0)
    compute = _BASE_OVERHEAD + vocab * 4 + batch * embedding * 4 * 16
    return Estimate(weights=model.tensor_bytes, kv_cache=kv_cache, compute=compute, layers=layers)


def free_vram() -> int | None:
    """Free memory of the first CUDA GPU in bytes (nvidia-smi), or None without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return int(out.split()[0]) * MIB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes; None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def gpu_layers(need: Estimate, vram: int) -> int:
    """Layers to offload into `vram` free bytes: -1 (all) when everything fits, else the most that fit."""
    room = vram - _VRAM_MARGIN - need.compute
    if room >= need.weights + need.kv_cache:
        return -1
    return max(0, min(need.layers, room // need.per_layer))


def vram_needed(need: Estimate, offloaded: int) -> int:
    """GPU memory for `offloaded` layers (-1: all) and the compute buffers."""
    layers = need.layers + 1 if offloaded < 0 else min(offloaded, need.layers)
    return layers * need.per_layer + need.compute + _VRAM_MARGIN


def ram_needed(need: Estimate, offloaded: int) -> int:
    """Host memory for the layers that stay on the CPU, plus the compute buffers."""
    if offloaded < 0:
        return need.compute
    on_cpu = need.layers + 1 - min(offloaded, need.layers)
    return on_cpu * need.per_layer + need.compute


def gib(size: int) -> str:
    """Bytes as GiB with one decimal, or MiB below 1 GiB."""
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / MIB:.0f} MiB"


def check_model_file(path: str, settings: Settings, gpu_offload: bool, vram: int | None = None) -> int:
    """Refuse, with a message a user can act on, a model that cannot load; else the GPU layers to load it with.

    `vram`: free GPU memory in bytes where it is known (CUDA), for choosing or checking the layers offloaded.
    """
    file = Path(path)
    if not file.exists():
        raise BackendError(f"model file not found: {path} (check local.modelPath or TANDEM_MODEL)")
    if not file.is_file():
        raise BackendError(f"model path is not a file: {path}")
    if file.name.endswith(".partial"):
        raise BackendError(f"{path} is an unfinished download: run the same `tandem models pull` again")
    try:
        with file.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise BackendError(f"model file cannot be read: {path}: {exc.strerror}") from exc
    if magic != b"GGUF":
        raise BackendError(f"not a GGUF model file: {path} (tandem loads llama.cpp GGUF files)")
    try:
        need = estimate(read_gguf(path), settings.context_size)
    except GgufError as exc:
        raise BackendError(f"model failed to load: {exc}") from exc
    layers = settings.n_gpu_layers
    most = -1 if vram is None or not gpu_offload else gpu_layers(need, vram)
    if layers is None:
        layers = most
        if most != -1:
            log.info(
                "%s: %d of %d layers fit in %s of free VRAM (model needs %s); the rest run on the CPU",
                file.name, most, need.layers, gib(vram or 0), gib(need.total),
            )  # fmt: skip
    elif most != -1 and (layers == -1 or layers > most):
        raise BackendError(
            f"model too large for GPU memory: {file.name} with local.nGpuLayers={layers} needs about "
            f"{gib(vram_needed(need, layers))}, {gib(vram or 0)} free; "
            f'set local.nGpuLayers to "auto" or at most {most}'
        )
    ram = ram_needed(need, layers if gpu_offload else 0)
    available = available_memory()
    if available is not None and ram > available:
        raise BackendError(
            f"model too large for memory: {path} needs about {gib(ram)} (weights {gib(need.weights)}, "
            f"KV cache {gib(need.kv_cache)} at context {settings.context_size}), {gib(available)} available;"
            " choose a smaller quantization or local.contextSize"
        )
    return layers
