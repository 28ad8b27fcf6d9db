#!/usr/bin/env bash
# Rebuilds the shipped quick-start model `models/fashion-toy` (InternVL-Chat: the toy InternViT +
# mlp1 in bf16, about 7 MB; the language model is SmolLM2-135M-Instruct, referenced by path and
# fetched by scripts/fetch_smollm2.sh) from the toy reproduction's stage-3 output, and checks it.
#
# Usage: scripts/ship_toy_model.sh [WORK_DIR]   (default assets/toy; runs scripts/toy_recipe.sh
#        first when WORK_DIR has no stage-3 model)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$ROOT/assets/toy}"
cd "$ROOT"
if [[ ! -f "$WORK/stage3/last/model.safetensors" ]]; then
  scripts/toy_recipe.sh "$WORK"
fi
cargo build --release -p internvl-cli
BIN=target/release/internvl
OUT=models/fashion-toy
rm -rf "$OUT/model.safetensors" "$OUT/config.json" "$OUT/tokenizer_config.json"
"$BIN" train export --model "$WORK/stage3/last" --out "$OUT" --dtype bf16
# Two test images per class as quick-start examples, in class folders (Fashion-MNIST is
# MIT-licensed): `internvl eval chat-classify` runs over them in the tests.
rm -rf "$OUT/examples"
for folder in "$WORK"/data/test/*/; do
  class="$(basename "$folder")"
  mkdir -p "$OUT/examples/$class"
  i=0
  for image in $(ls "$folder" | head -2); do
    cp "$folder/$image" "$OUT/examples/$class/$i.png"
    i=$((i + 1))
  done
done
"$BIN" eval chat-classify --model "$OUT" --images "$WORK/data/test" --per-class 100 \
  --max-new-tokens 8 --name fashion-mnist-test-1000 --out "$WORK/shipped-chat"
