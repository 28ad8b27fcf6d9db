#!/usr/bin/env bash
# The official `openai` Python client (PyPI) in a venv under assets/, for the serving integration
# test (crates/internvl-cli/tests/serve.rs). Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/assets/venvs/openai"
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "import openai" 2>/dev/null; then
  echo "openai client already in $venv"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q openai==3.57.0
echo "openai client installed in $venv"
