"""Read a GGUF file's header, metadata and tensor table without loading its weights."""

from __future__ import annotations

import math
import mmap
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# llama.cpp's LLAMA_FTYPE_MOSTLY_* numbers (general.file_type)
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
}  # fmt: skip

# ggml's type_traits: elements per block and bytes per block of each tensor type (ggml.c).
_BLOCKS = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17),
}  # fmt: skip
KNOWN_VERSIONS = (2, 3)
"""GGUF versions this reader knows the layout of."""

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class GgufError(ValueError):
    """The file is not a readable GGUF; the message says why."""


class _Reader:
    def __init__(self, data: mmap.mmap | bytes, path: str) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise GgufError(f"{self.path}: truncated GGUF header (cut off at byte {self.pos})")
        value = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return value[0] if len(value) == 1 else value

    def string(self) -> str:
        length = self.unpack("Q")
        if self.pos + length > len(self.data):
            raise GgufError(f"{self.path}: truncated GGUF header (string at byte {self.pos})")
        text = bytes(self.data[self.pos : self.pos + length]).decode("utf-8", "replace")
        self.pos += length
        return text

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.unpack("I"), self.unpack("Q")
            if item in _SCALARS:
                fmt = f"{count}{_SCALARS[item]}"
                values = self.unpack(fmt) if count != 1 else (self.unpack(fmt),)
                return list(values) if count else []
            return [self.value(item) for _ in range(count)]
        raise GgufError(f"{self.path}: unknown GGUF value type {kind} at byte {self.pos}")


@dataclass(frozen=True)
class Gguf:
    """A GGUF file's metadata and the sizes its tensor table states."""

    path: str
    version: int
    metadata: dict[str, Any]
    """Every key-value pair; arrays are lists."""
    tensor_count: int
    parameters: int
    """Weights in all tensors."""
    tensor_bytes: int
    """Bytes of tensor data: what loading the weights takes."""
    file_size: int
    warnings: tuple[str, ...] = ()
    """What is wrong with a file that could still be read: truncated tensor data, an unknown version."""

    @property
    def architecture(self) -> str:
        """general.architecture, e.g. llama, qwen2, gemma3."""
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch(self, key: str) -> Any:
        """An architecture-specific key, e.g. `arch("block_count")` reads `llama.block_count`."""
        return self.metadata.get(f"{self.architecture}.{key}")

    @property
    def quantization(self) -> str | None:
        """The file type's name (Q4_K_M, ...) from general.file_type."""
        kind = self.metadata.get("general.file_type")
        return None if kind is None else FILE_TYPES.get(int(kind), f"type {kind}")

    def token_text(self, token: int) -> str:
        """The vocabulary's text of a token id."""
        tokens = self.metadata.get("tokenizer.ggml.tokens") or []
        return str(tokens[token]) if 0 <= token < len(tokens) else f"<token {token}>"

    def fim_tokens(self) -> dict[str, str]:
        """FIM markers the metadata names (`tokenizer.ggml.fim_*_token_id`), by role."""
        found = {}
        for role in ("pre", "suf", "mid", "pad", "rep", "sep"):
            token = self.metadata.get(f"tokenizer.ggml.fim_{role}_token_id")
            if token is not None:
                found[role] = self.token_text(int(token))
        return found

    def string_metadata(self) -> dict[str, str]:
        """Scalar metadata as strings, the form llama-cpp-python's `Llama.metadata` has."""
        return {k: str(v) for k, v in self.metadata.items() if not isinstance(v, list)}


def read_gguf(path: str | Path) -> Gguf:
    """Parse the header, metadata and tensor table of `path`; the weights are never read."""
    name = str(path)
    try:
        mode = os.stat(path).st_mode
        # Opening a FIFO blocks until a writer comes; a device may never end.
        if not stat.S_ISREG(mode):
            raise GgufError(f"{name}: not a regular file ({_file_kind(mode)})")
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < 24:
                raise GgufError(f"not a GGUF model file: {name} ({size} bytes)")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _parse(_Reader(data, name), size)
    except OSError as exc:
        raise GgufError(f"{name}: cannot read: {exc.strerror or exc}") from exc


def _file_kind(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a plain file")


def _parse(r: _Reader, size: int) -> Gguf:
    if bytes(r.data[:4]) != b"GGUF":
        raise GgufError(f"not a GGUF model file: {r.path} (tandem loads llama.cpp GGUF files)")
    r.pos = 4
    version = r.unpack("I")
    if version < 2:
        raise GgufError(f"{r.path}: GGUF version {version} is too old; convert the model again")
    warnings = []
    if version not in KNOWN_VERSIONS:
        warnings.append(
            f"GGUF version {version} is newer than this reader knows ({KNOWN_VERSIONS[-1]}); what it shows may be wrong"
        )
    tensor_count, kv_count = r.unpack("Q"), r.unpack("Q")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = r.string()
        metadata[key] = r.value(r.unpack("I"))
    parameters = 0
    data_end = 0  # how far into the data section the tensors reach, counting those of known types
    for _ in range(tensor_count):
        r.string()
        dims = [r.unpack("Q") for _ in range(r.unpack("I"))]
        kind = r.unpack("I")
        offset = r.unpack("Q")
        parameters += math.prod(dims)
        if kind in _BLOCKS:
            per_block, block_bytes = _BLOCKS[kind]
            data_end = max(data_end, offset + math.prod(dims) // per_block * block_bytes)
    alignment = int(metadata.get("general.alignment", 32))
    data_start = -(-r.pos // alignment) * alignment
    if tensor_count and size < data_start + data_end:
        warnings.append(
            f"truncated: its tensors need {data_start + data_end} bytes, the file has {size}; "
            "download or convert it again"
        )
    return Gguf(
        path=r.path,
        version=version,
        metadata=metadata,
        tensor_count=tensor_count,
        parameters=parameters,
        tensor_bytes=max(0, size - data_start),
        file_size=size,
        warnings=tuple(warnings),
    )
