#!/usr/bin/env bash
# Fetches the real LLaMA (LLaMA-1/2, Vicuna) sentencepiece vocabulary and llama.cpp's tokenizer
# test vectors into tests/fixtures/tokenizers/llama-spm/.
#
# Source: PyPI llama-cpp-python==0.3.36 *sdist* (MIT), which vendors llama.cpp and its vocab-only
# GGUF files with reference vectors (`.gguf.inp`: 46 test strings, each followed by a line
# `__ggml_vocab_test__`; `.gguf.out`: their token ids, one line per string, without BOS).
# The files are small (about 0.8 MB) and are committed; rerun this script only to refresh them.
#
# Usage: scripts/fetch_tokenizer_assets.sh [SCRATCH_DIR]
set -euo pipefail

VERSION="0.3.36"
MODELS="vendor/llama.cpp/models"
# sha256 of the three files taken from the sdist (checked before anything is copied).
GGUF_SHA256_PREFIX="16c3724582d59aa8"
declare -A SHA256=(
  [ggml-vocab-llama-spm.gguf]="16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69"
  [ggml-vocab-llama-spm.gguf.inp]="be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
  [ggml-vocab-llama-spm.gguf.out]="ad6905c925c49c022974fe67e030382e8a4f56eb4489a0b9481dcedb1ec73b29"
)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/tests/fixtures/tokenizers/llama-spm"
SCRATCH="${1:-$(mktemp -d)}"
mkdir -p "$SCRATCH" "$DEST"

PYTHON="${PYTHON:-python3}"
SDIST="$SCRATCH/llama_cpp_python-$VERSION.tar.gz"
if [[ ! -f "$SDIST" ]]; then
  echo "downloading llama-cpp-python==$VERSION sdist (about 77 MB, about a minute)..."
  # --no-binary for this package only: `--no-binary :all:` would build cmake from source and hang.
  "$PYTHON" -m pip download --no-deps --no-binary llama-cpp-python -d "$SCRATCH" \
    "llama-cpp-python==$VERSION"
fi

PREFIX="llama_cpp_python-$VERSION"
tar -xzf "$SDIST" -C "$SCRATCH" \
  "$PREFIX/$MODELS/ggml-vocab-llama-spm.gguf" \
  "$PREFIX/$MODELS/ggml-vocab-llama-spm.gguf.inp" \
  "$PREFIX/$MODELS/ggml-vocab-llama-spm.gguf.out" \
  "$PREFIX/vendor/llama.cpp/LICENSE"

SRC="$SCRATCH/$PREFIX/$MODELS"
actual_prefix="$(sha256sum "$SRC/ggml-vocab-llama-spm.gguf" | cut -c1-16)"
if [[ "$actual_prefix" != "$GGUF_SHA256_PREFIX" ]]; then
  echo "error: ggml-vocab-llama-spm.gguf sha256 starts with $actual_prefix, expected $GGUF_SHA256_PREFIX" >&2
  exit 1
fi
for name in "${!SHA256[@]}"; do
  actual="$(sha256sum "$SRC/$name" | cut -d' ' -f1)"
  if [[ "$actual" != "${SHA256[$name]}" ]]; then
    echo "error: $name sha256 is $actual, expected ${SHA256[$name]}" >&2
    exit 1
  fi
done

cp "$SRC/ggml-vocab-llama-spm.gguf" "$SRC/ggml-vocab-llama-spm.gguf.inp" \
  "$SRC/ggml-vocab-llama-spm.gguf.out" "$DEST/"
cp "$SCRATCH/$PREFIX/vendor/llama.cpp/LICENSE" "$DEST/LICENSE"
cat >"$DEST/README.md" <<EOF
# llama-spm: the real LLaMA-1/2 (Vicuna) sentencepiece vocabulary

Copied unchanged by \`scripts/fetch_tokenizer_assets.sh\` from the PyPI sdist
\`llama-cpp-python==$VERSION\`, folder \`$MODELS/\` (llama.cpp, MIT licence: see \`LICENSE\`,
copyright the ggml authors):

| file | what |
| --- | --- |
| \`ggml-vocab-llama-spm.gguf\` | vocab-only GGUF: 32000 pieces with scores and token types (sha256 ${SHA256[ggml-vocab-llama-spm.gguf]}) |
| \`ggml-vocab-llama-spm.gguf.inp\` | 46 test strings, each followed by a line \`__ggml_vocab_test__\` |
| \`ggml-vocab-llama-spm.gguf.out\` | llama.cpp's expected ids for each string (no BOS), one line each |

Used by \`crates/internvl/tests/tokenizer.rs\`.
EOF
echo "copied llama-spm vocab and vectors to $DEST"
