"""A tiny loadable llama-architecture GGUF with FIM marker tokens, written for tests."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

FIM_MARKERS = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")
N_EMBD = 64
N_FF = 128
N_HEAD = 4
N_LAYER = 2
N_CTX = 512

_SPECIAL = ("<unk>", "<s>", "</s>", *FIM_MARKERS)


def _vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = list(_SPECIAL)
    types = [gguf.TokenType.UNKNOWN] + [gguf.TokenType.CONTROL] * (len(_SPECIAL) - 1)
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    # SentencePiece writes a space as U+2581.
    pieces = ["▁", *(chr(c) for c in range(33, 127))]
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    scores = [0.0] * (len(tokens) - len(pieces)) + [-float(i) for i in range(len(pieces))]
    return tokens, scores, [int(t) for t in types]


def write_tiny_fim_model(path: Path, seed: int = 0, chat_template: str | None = None) -> Path:
    """Write a random-weight llama model (2 layers, 64 wide) whose vocabulary has FIM markers, and
    `chat_template` as its `tokenizer.chat_template` when given."""
    rng = np.random.default_rng(seed)
    tokens, scores, types = _vocab()

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.05).astype(np.float16)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-fim")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_feed_forward_length(N_FF)
    writer.add_block_count(N_LAYER)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)
    writer.add_uint32("tokenizer.ggml.fim_pre_token_id", tokens.index("<fim_prefix>"))
    writer.add_uint32("tokenizer.ggml.fim_suf_token_id", tokens.index("<fim_suffix>"))
    writer.add_uint32("tokenizer.ggml.fim_mid_token_id", tokens.index("<fim_middle>"))
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    ones = np.ones(N_EMBD, dtype=np.float32)
    writer.add_tensor("token_embd.weight", matrix(len(tokens), N_EMBD))
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", matrix(len(tokens), N_EMBD))
    for i in range(N_LAYER):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", matrix(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", matrix(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", matrix(N_EMBD, N_FF))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
