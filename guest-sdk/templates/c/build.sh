#!/bin/sh
# Builds {{name}}.wasm with clang and wasm-ld (apt-get install -y clang lld): no libc, no
# start function (docs/abi.md, "Building one in C").
set -e
cd "$(dirname "$0")"
clang --target=wasm32 -O2 -nostdlib -fno-builtin -Wall -Wextra -Wl,--no-entry -Wl,--export-dynamic \
  -I . -o {{name}}.wasm {{name}}.c
echo "built {{name}}.wasm"
