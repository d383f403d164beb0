#!/usr/bin/env bash
# Run a command with every core kept busy by a niced CPU hog, as a loaded laptop or CI machine is:
# `bash scripts/under-load.sh make test` (what `make test-stress` runs). The hogs end with the command.
set -euo pipefail
hogs=()
trap 'kill "${hogs[@]}" 2>/dev/null || true' EXIT
for _ in $(seq "$(nproc)"); do
  nice -n 10 python3 -c 'while True: pass' &
  hogs+=($!)
done
echo "under-load: $(nproc) niced CPU hogs running beside: $*" >&2
"$@"
