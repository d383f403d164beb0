#!/usr/bin/env bash
# Extract the vocab-only GGUFs the tokenizer tests use from llama-cpp-python's source distribution.
set -euo pipefail
python=$1
dest=$2
version=$("$python" -c 'import llama_cpp; print(llama_cpp.__version__)')
sdist_dir=.cache/sdist
mkdir -p "$sdist_dir" "$dest"
sdist="$sdist_dir/llama_cpp_python-$version.tar.gz"
if [ ! -f "$sdist" ]; then
  "$python" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$sdist_dir"
fi
names=(starcoder deepseek-coder qwen2 llama-spm gemma-4 refact)
members=()
for name in "${names[@]}"; do members+=("llama_cpp_python-$version/vendor/llama.cpp/models/ggml-vocab-$name.gguf"); done
tar -xzf "$sdist" -C "$sdist_dir" "${members[@]}"
for member in "${members[@]}"; do cp "$sdist_dir/$member" "$dest/"; done
