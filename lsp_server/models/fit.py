"""Will a model fit: memory for weights + KV cache + compute from GGUF metadata, and GPU layers for free VRAM."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from lsp_server.models.gguf import Gguf

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
