#!/usr/bin/env bash
# The main job on the embedded default photo: sets up .venv, writes scikit-image's public-domain astronaut
# photo (Eileen Collins, NASA) to outputs/demo_input/, finds the face model (flag/env, then the shared ICT-FaceKit
# archive, then a git clone of ICT-VGL/ICT-FaceKit) and reconstructs it with the no-weights path (per-image fit
# for the prior and the details) into outputs/demo/.
#   bash scripts/run_demo.sh [extra flags for scripts/reconstruct.py, e.g. --fit_steps 60 or --face_model PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export TF_CPP_MIN_LOG_LEVEL=2
mkdir -p outputs/demo_input
.venv/bin/python -c "
import skimage.data
from tf_facetex import io_utils
io_utils.write_image('outputs/demo_input/astronaut.png', skimage.data.astronaut())
"
start=$(date +%s)
.venv/bin/python scripts/reconstruct.py --input outputs/demo_input/astronaut.png --output_dir outputs/demo "$@"
echo "[run_demo] done in $(( $(date +%s) - start )) s: outputs/demo/astronaut/ (open outputs/demo/index.html)"
