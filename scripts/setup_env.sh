#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment in .venv and installs everything tf_facetex
# needs, from the package registry only. Safe to re-run: it is a no-op when nothing changed.
#   bash scripts/setup_env.sh            # -> .venv
#   VENV=/path/to/venv bash scripts/setup_env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.tf_facetex_installed"
want="$(cat requirements.txt setup.py | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup_env] creating virtual environment $VENV" >&2
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
echo "[setup_env] installing pinned requirements (a few minutes on first run)" >&2
"$VENV/bin/python" -m pip install -q -r requirements.txt
# tensorflow-graphics declares tensorflow-addons as a dependency although the modules we use never
# import it; tensorflow-addons is end-of-life and does not work with Keras 3, so install tfg alone.
"$VENV/bin/python" -m pip install -q --no-deps tensorflow-graphics==2021.12.3
"$VENV/bin/python" -m pip install -q --no-deps -e .
if "$VENV/bin/python" -c "import tensorflow_addons" 2>/dev/null; then
  echo "[setup_env] error: tensorflow_addons is installed in $VENV; tf_facetex must not depend on it" >&2
  exit 1
fi
echo "$want" > "$stamp"
echo "[setup_env] ready: $VENV" >&2
