#!/bin/sh
# Builds {{name}}.wasm (rustup target add wasm32-unknown-unknown, once).
set -e
cd "$(dirname "$0")"
cargo build --quiet --release --target wasm32-unknown-unknown
cp target/wasm32-unknown-unknown/release/{{crate}}.wasm {{name}}.wasm
echo "built {{name}}.wasm"
