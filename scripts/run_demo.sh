#!/usr/bin/env bash
# The main job on the embedded default: sets up .venv, finds the face model (flag/env, then the shared
# ICT-FaceKit archive, then a git clone of ICT-VGL/ICT-FaceKit), and runs the demo into outputs/demo/.
#   bash scripts/run_demo.sh [extra flags for the demo script]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export TF_CPP_MIN_LOG_LEVEL=2
mkdir -p outputs/demo
.venv/bin/python scripts/show_face_model.py --out outputs/demo/face_model.png "$@"
