#!/bin/sh
# Builds {{name}}.wasm with Zig (python3 -m pip install ziglang): the header through
# translate-c, bound to module "framegate" by framegate.zig.
set -e
cd "$(dirname "$0")"
zig="${ZIG:-python3 -m ziglang}"
$zig translate-c -target wasm32-freestanding framegate.h >framegate_h.zig
$zig build-exe -target wasm32-freestanding -fno-entry -rdynamic -O ReleaseSmall --name {{name}} \
  --dep framegate -Mroot={{name}}.zig \
  --dep framegate_h -Mframegate=framegate.zig -Mframegate_h=framegate_h.zig
echo "built {{name}}.wasm"
