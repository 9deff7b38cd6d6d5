#!/usr/bin/env bash
# Installs the client tools the slow interoperability tests use, outside the repository and outside .venv
# (nothing here is needed by the product or the default test suite):
#   npm       gltf-validator (Khronos), puppeteer-core (drives chromium), three + esbuild (to rebuild the
#             vendored viewer)                                                       -> $TOOLS/npm
#   chromium  Debian's chromium (headless screenshots of the contact sheet)          -> apt
#   bpy       Blender as a Python module (PyPI bpy, ~500 MB), its own venv            -> $TOOLS/bpy_venv
#   litert    ai-edge-litert (the LiteRT interpreter), a --target dir for PYTHONPATH -> $TOOLS/litert_site
#   beam      apache-beam, a venv on top of .venv's packages (keeps .venv's pins)     -> $TOOLS/beam_venv
# Usage: scripts/install_tools.sh npm|chromium|bpy|litert|beam ...   (each is skipped when already there)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="${TF_FACETEX_TOOLS:-$HOME/.cache/tf_facetex}"
PY="${ROOT}/.venv/bin/python"
BPY_VERSION=5.0.1            # Blender 5.0's module, built for Python 3.11
LITERT_VERSION=2.3.0
BEAM_VERSION=2.77.0
mkdir -p "$TOOLS"

for tool in "$@"; do
  case "$tool" in
    npm)
      if [ ! -f "$TOOLS/npm/node_modules/gltf-validator/package.json" ] || [ ! -f "$TOOLS/npm/node_modules/puppeteer-core/package.json" ]; then
        mkdir -p "$TOOLS/npm"
        npm install --no-audit --no-fund --prefix "$TOOLS/npm" gltf-validator@2.0.0-dev.3.10 three@0.187.0 esbuild@0.28.2 puppeteer-core@24.43.1
      fi ;;
    chromium)
      if ! command -v chromium >/dev/null; then
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
      fi ;;
    bpy)
      if ! "$TOOLS/bpy_venv/bin/python" -c "import bpy" 2>/dev/null; then
        "$(command -v python3.11 || echo python3)" -m venv "$TOOLS/bpy_venv"
        "$TOOLS/bpy_venv/bin/pip" install -q "bpy==$BPY_VERSION" pillow absl-py
      fi ;;
    litert)
      if ! PYTHONPATH="$TOOLS/litert_site" "$PY" -c "import ai_edge_litert.interpreter" 2>/dev/null; then
        # --no-deps: its dependencies (numpy, protobuf, ml_dtypes, ...) are .venv's, at .venv's pins.
        "$PY" -m pip install -q --no-deps --target "$TOOLS/litert_site" "ai-edge-litert==$LITERT_VERSION" backports.strenum
      fi ;;
    beam)
      if ! "$TOOLS/beam_venv/bin/python" -c "import apache_beam" 2>/dev/null; then
        # A venv that sees .venv's packages (a .pth file), so .venv itself is never modified; the constraints keep
        # every package .venv pins at its version except pillow (beam 2.77 needs pillow<13: it gets 12.x here,
        # shadowing .venv's inside this venv only). It also brings protobuf 6.x (beam needs <7; TensorFlow 2.21's
        # generated code is 6.31, so both work).
        "$PY" -m venv "$TOOLS/beam_venv"
        echo "$("$PY" -c 'import sysconfig; import os; print(os.path.realpath(sysconfig.get_paths()["purelib"]))')" \
          > "$TOOLS/beam_venv/lib/python3.11/site-packages/tf_facetex_venv.pth"
        grep -v -i '^pillow' "$ROOT/requirements.txt" > "$TOOLS/beam_constraints.txt"
        "$TOOLS/beam_venv/bin/pip" install -q "apache-beam==$BEAM_VERSION" -c "$TOOLS/beam_constraints.txt"
      fi ;;
    *) echo "unknown tool: $tool (npm, chromium, bpy, litert, beam)" >&2; exit 2 ;;
  esac
done
