#!/bin/bash
# Copies the slice code of runtime/src/models/kernels.rs (no candle) into src/kernels.rs, builds
# in its own target dir and runs GPT-2-small's products: rows 1 and 4, 1 and 2 rayon threads,
# f32 and bfloat16 panels; KB_TASK=4 forces the old tasks of 4 panels.
#   scripts/decode-kernels-bench/run.sh [STEPS]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python3 - "$here/../../runtime/src/models/kernels.rs" "$here/src/kernels.rs" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
src = src[:src.index('#[cfg(test)]')]
items = re.split(r'\n(?=(?:///|#\[|pub\(crate\) |fn |impl|struct |trait |const |use |//!))', src)
text = '\n'.join(i for i in items if not (i.startswith('//!') or i.startswith('use ')))
text = re.sub(r'\n    /// Packs an f32 CPU tensor `\[n, k\]`\.\n    pub\(crate\) fn from_tensor.*?\n    }\n', '\n', text, flags=re.S)
for name in ['pub(crate) fn linear(', 'pub(crate) fn f32_slice', 'pub(crate) fn linear_applies',
             'pub(crate) fn linear_panels', 'pub(crate) fn linear_bf16_panels', 'fn linear_with(']:
    i = text.find(name)
    while i != -1:
        start = text.rfind('\n\n', 0, i) + 2
        end = text.find('\n}\n', i) + 3
        text = text[:start] + text[end:]
        i = text.find(name)
text = text.replace('fn task_panels(np: usize, threads: usize) -> usize {\n',
    'fn task_panels(np: usize, threads: usize) -> usize {\n    if let Ok(v) = std::env::var("KB_TASK") {\n        return v.parse().unwrap();\n    }\n', 1)
open(sys.argv[2], 'w').write('#![allow(dead_code, unused)]\nuse pulp::{Simd, WithSimd};\nuse rayon::prelude::*;\n' + text)
PY
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/decode-kernels-bench}"
(cd "$here" && nice -n 19 cargo build --release -q)
steps="${1:-10}"
for rows in 1 4; do
  for t in 1 2; do RAYON_NUM_THREADS=$t nice -n 19 "$CARGO_TARGET_DIR/release/decode-kernels-bench" "$rows" "$steps" | tail -4; done
  KB_TASK=4 RAYON_NUM_THREADS=2 nice -n 19 "$CARGO_TARGET_DIR/release/decode-kernels-bench" "$rows" "$steps" | sed 's/^/tasks-of-4 /' | tail -4
done
