#!/usr/bin/env bash
# The main job on the embedded default photo: sets up .venv, writes scikit-image's public-domain astronaut
# photo (Eileen Collins, NASA) to outputs/demo_input/, finds the face model (flag/env, then the shared ICT-FaceKit
# archive, then a git clone of ICT-VGL/ICT-FaceKit) and reconstructs it with the per-image fit (prior and details)
# into outputs/demo/. The face mask is the shipped parsing network (saved_models/parsing_net/, see its
# MODEL_CARD.md); reconstruct.py prints which weights it loaded (or a WARNING when it had to fall back).
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
if [ ! -f saved_models/parsing_net/parsing_net.keras ] && [ -z "${TF_FACETEX_PARSING_NET:-}" ]; then
    echo "[run_demo] WARNING: saved_models/parsing_net/parsing_net.keras is missing: the demo falls back to the" \
         "landmark+skin-colour mask (hair may reach the albedo)" >&2
fi
.venv/bin/python scripts/reconstruct.py --input outputs/demo_input/astronaut.png --output_dir outputs/demo "$@"
echo "[run_demo] done in $(( $(date +%s) - start )) s: outputs/demo/astronaut/ (open outputs/demo/index.html)"
