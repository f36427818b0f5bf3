#!/usr/bin/env bash
# WebAssembly user code: installs the wasm32-wasip2 target when missing and builds every guest
# (examples/* and tests/guests/*) once, into "${CARGO_TARGET_DIR:-target}/guests", where the
# tests look for them (they rebuild on their own if this did not run; this just does it up front
# and fails early with a clear message).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "wasm-setup: installing the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

packages=()
for dir in examples/*/ tests/guests/*/; do
  if [ -f "${dir}Cargo.toml" ]; then
    packages+=(-p "$(basename "$dir")")
  fi
done

target_dir="${CARGO_TARGET_DIR:-target}/guests"
echo "wasm-setup: building ${#packages[@]} guest packages into ${target_dir}"
CARGO_TARGET_DIR="$target_dir" cargo build --release --target wasm32-wasip2 "${packages[@]}"
