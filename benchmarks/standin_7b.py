"""Write a GGUF with the shape of a 7B code model (CodeLlama-7B: llama architecture, 4096 wide,
32 layers, 32 heads, 11008 feed-forward, 32,016 tokens with FIM markers) and random Q4_K weights.

It is a stand-in for speed only: llama.cpp does the same work per token as for a real 7B Q4_K_M
model (same tensor shapes and quantization types), but the text it writes is noise. Use it to
time `tandem bench --model PATH` on a GPU where no real weights can be downloaded, and say so
next to any number taken with it.

    python benchmarks/standin_7b.py OUT.gguf [--layers 32]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gguf
import numpy as np

N_EMBD = 4096
N_FF = 11008
N_HEAD = 32
N_VOCAB = 32016
N_CTX = 16384
QK_K = 256
_BLOCK_BYTES = {gguf.GGMLQuantizationType.Q4_K: 144, gguf.GGMLQuantizationType.Q6_K: 210}
_FIM = ("<PRE>", "<SUF>", "<MID>", "<EOT>")


def _vocab() -> tuple[list[str], list[float], list[int]]:
    special = ["<unk>", "<s>", "</s>", *_FIM]
    tokens = special + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN] + [gguf.TokenType.CONTROL] * (len(special) - 1) + [gguf.TokenType.BYTE] * 256
    pieces = ["▁", *(chr(c) for c in range(33, 127))]
    pieces += [f"▁w{i}" for i in range(N_VOCAB - len(tokens) - len(pieces))]  # filler to the real vocabulary size
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    scores = [0.0] * (len(tokens) - len(pieces)) + [-float(i) for i in range(len(pieces))]
    return tokens, scores, [int(t) for t in types]


def _blocks(rng: np.random.Generator, rows: int, cols: int, kind: gguf.GGMLQuantizationType) -> np.ndarray:
    """Random quantized blocks with small, finite scales (random bytes there could be NaN or huge)."""
    size = _BLOCK_BYTES[kind]
    data = rng.integers(0, 256, size=(rows * cols // QK_K, size), dtype=np.uint8)
    scale = np.frombuffer(np.float16(1e-3).tobytes() * 2, dtype=np.uint8)
    if kind == gguf.GGMLQuantizationType.Q4_K:
        data[:, 0:4] = scale  # d and dmin lead the block
    else:
        data[:, 208:210] = scale[:2]  # Q6_K: d ends the block
    return data.reshape(rows, cols // QK_K * size)


def write(path: Path, layers: int = 32, seed: int = 0) -> Path:
    """Write the stand-in model; tensors are generated and written one at a time (little memory)."""
    rng = np.random.default_rng(seed)
    q4, q6 = gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q6_K
    tokens, scores, types = _vocab()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("CodeLlama 7B shape, random weights (speed stand-in)")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_feed_forward_length(N_FF)
    writer.add_block_count(layers)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)
    for key, marker in zip(("fim_pre", "fim_suf", "fim_mid", "eot"), _FIM, strict=True):
        writer.add_uint32(f"tokenizer.ggml.{key}_token_id", tokens.index(marker))

    plan: list[tuple[str, int, int, gguf.GGMLQuantizationType | None]] = [
        ("token_embd.weight", len(tokens), N_EMBD, q4),
        ("output_norm.weight", 1, N_EMBD, None),
        ("output.weight", len(tokens), N_EMBD, q6),
    ]
    for i in range(layers):
        plan += [
            (f"blk.{i}.attn_norm.weight", 1, N_EMBD, None),
            (f"blk.{i}.attn_q.weight", N_EMBD, N_EMBD, q4),
            (f"blk.{i}.attn_k.weight", N_EMBD, N_EMBD, q4),
            (f"blk.{i}.attn_v.weight", N_EMBD, N_EMBD, q6),  # Q4_K_M keeps some tensors at Q6_K
            (f"blk.{i}.attn_output.weight", N_EMBD, N_EMBD, q4),
            (f"blk.{i}.ffn_norm.weight", 1, N_EMBD, None),
            (f"blk.{i}.ffn_gate.weight", N_FF, N_EMBD, q4),
            (f"blk.{i}.ffn_up.weight", N_FF, N_EMBD, q4),
            (f"blk.{i}.ffn_down.weight", N_EMBD, N_FF, q6),
        ]
    for name, rows, cols, kind in plan:
        if kind is None:
            writer.add_tensor_info(name, (cols,), np.dtype(np.float32), cols * 4)
        else:
            writer.add_tensor_info(
                name,
                (rows, cols // QK_K * _BLOCK_BYTES[kind]),
                np.dtype(np.uint8),
                rows * cols // QK_K * _BLOCK_BYTES[kind],
                raw_dtype=kind,
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _name, rows, cols, kind in plan:
        writer.write_tensor_data(np.ones(cols, dtype=np.float32) if kind is None else _blocks(rng, rows, cols, kind))
    writer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    """Write the stand-in to the path given."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--layers", type=int, default=32, help="32 for the 7B shape; fewer for a quick check")
    args = parser.parse_args(argv)
    write(args.out, args.layers)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**30:.2f} GiB), random weights: a speed stand-in only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
