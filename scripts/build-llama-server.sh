#!/usr/bin/env bash
# Build llama.cpp's llama-server from the sources vendored in llama-cpp-python's source distribution,
# linked against the libllama/libggml/libmtmd that llama-cpp-python installed: the peer in
# `tandem bench` then runs the very same compiled kernels as tandem, and only the server and its
# common code are compiled (minutes on 2 cores instead of the better part of an hour).
# Usage: scripts/build-llama-server.sh PYTHON [DEST]; prints the binary's path. Built once, then cached outside the
# checkout (tandem's cache folder, `$TANDEM_CACHE_DIR` or `${XDG_CACHE_HOME:-~/.cache}/tandem`), so every checkout
# and a CI machine that keeps its cache folder build it once per llama-cpp-python version.
set -euo pipefail
python=$1
version=$("$python" -c 'import llama_cpp; print(llama_cpp.__version__)')
cache=${TANDEM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem}
dest=${2:-$cache/llama-server-$version}
libs=$("$python" -c 'import llama_cpp, pathlib; print(pathlib.Path(llama_cpp.__file__).parent / "lib")')
build="$dest/build"
binary="$build/bin/llama-server"
if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi
sdist_dir=.cache/sdist  # shared with scripts/fetch-vocab.sh
mkdir -p "$sdist_dir" "$dest"
sdist="$sdist_dir/llama_cpp_python-$version.tar.gz"
if [ ! -f "$sdist" ]; then
  "$python" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$sdist_dir" >&2
fi
src="$dest/src"
if [ ! -f "$src/CMakeLists.txt" ]; then
  rm -rf "$src"
  mkdir -p "$src"
  tar -xzf "$sdist" -C "$src" --strip-components=3 "llama_cpp_python-$version/vendor/llama.cpp"
fi
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=ON \
  -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON -DCMAKE_BUILD_RPATH='$ORIGIN' >&2  # the build folder may move
# The model libraries come from llama-cpp-python, under the names the server's link line expects.
mkdir -p "$build/bin"
for lib in "$libs"/lib*.so.*.*.*; do
  name=$(basename "$lib")
  cp -f "$lib" "$build/bin/$name"
  ln -sf "$name" "$build/bin/${name%.*.*}"
  ln -sf "$name" "$build/bin/${name%%.so.*}.so"
done
# Each target's own makefile, so make does not rebuild the libraries above from source.
jobs=${TANDEM_BUILD_JOBS:-2}
for target in vendor/cpp-httplib/CMakeFiles/cpp-httplib common/CMakeFiles/llama-common-base \
  common/CMakeFiles/llama-common tools/ui/CMakeFiles/llama-ui-assets tools/ui/CMakeFiles/llama-ui \
  tools/server/CMakeFiles/server-context tools/server/CMakeFiles/llama-server-impl \
  tools/server/CMakeFiles/llama-server; do
  make -C "$build" -j "$jobs" -f "$target.dir/build.make" "$target.dir/depend" >&2
  make -C "$build" -j "$jobs" -f "$target.dir/build.make" "$target.dir/build" >&2
done
echo "$binary"
