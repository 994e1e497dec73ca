#!/bin/sh
# Builds {{name}}.wasm with AssemblyScript (npm install, once, fetches its compiler).
set -e
cd "$(dirname "$0")"
[ -x node_modules/.bin/asc ] || npm install --no-audit --no-fund --silent
node_modules/.bin/asc {{name}}.ts --config asconfig.json --outFile {{name}}.wasm
echo "built {{name}}.wasm"
