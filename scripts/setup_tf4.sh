#!/usr/bin/env bash
# A second, small environment for the token-id test under transformers 4.x (the authors' version): .venv-tf4 holds
# transformers 4.57 and its tokenizers; everything else (torch, conch-fork, this package) comes from .venv, read
# after .venv-tf4's own packages. Needs .venv (scripts/setup.sh). About 40 MB; made once.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
if [ ! -x .venv-tf4/bin/python ] || ! .venv-tf4/bin/python -c "import transformers" 2>/dev/null; then
  echo "[setup] creating .venv-tf4 (transformers 4.x, for the token-id test)"
  rm -rf .venv-tf4
  "$py" -m venv .venv-tf4
  .venv-tf4/bin/pip install -q "transformers>=4.57,<5" 2>&1 | { grep -v "^WARNING: Location '" || true; }
fi
main_site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
tf4_site="$(.venv-tf4/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$main_site" > "$tf4_site/zz_anonavila_main_venv.pth"   # appended last: .venv-tf4's transformers wins
echo "[setup] .venv-tf4 ready: transformers $(.venv-tf4/bin/python -c 'import transformers; print(transformers.__version__)')"
