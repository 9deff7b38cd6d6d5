#!/usr/bin/env bash
# Real-photo refinement recipe on CPU (issue 11 part 3), every stage bounded:
#   1. preprocess  UTKFace + CelebAMask-HQ train images -> aligned-face TFRecords (content-hash 85/15 split,
#                  byte-identical duplicates removed); only PREP_SHARDS of NUM_SHARDS hash shards are processed,
#                  i.e. a content-hash-random subset of the photos (~5,700 / NUM_SHARDS photos per shard);
#   check          the train and test records share no source/sha1 (exact); near duplicates (crop NCC) are reported;
#   2. samples     the frozen prior (per-image fit) on both splits -> refinement samples (TRAIN_LIMIT / TEST_LIMIT);
#   3. train       scripts/train.py --flagfile=configs/refine_real_cpu.cfg (MAX_STEPS bounds it);
#   4. eval        scripts/evaluate.py on the test samples: prior, fit (OD/OC), the trained net (OD/OC).
#
#   bash scripts/run_real_recipe.sh                      # all stages
#   STAGES="train eval" MAX_STEPS=200 bash scripts/run_real_recipe.sh
# Budgets (environment): PREP_SHARDS (6 of NUM_SHARDS=64), TRAIN_LIMIT (480), TEST_LIMIT (96), UV_SIZE (128),
# VAL_SHARDS (0: no validation split; the shipped network used 4, i.e. train shards 60-63) and VAL_LIMIT (160),
# FIT_STEPS (landmark fit, 300), MAX_STEPS (see the cfg),
# TRAIN_SECONDS (1380: SIGTERM -> checkpoint, exit 143, counted as done), EVAL_LIMIT (0 = all test samples), EVAL_FIT_STEPS (150).
# Data and runs go to OUT (outputs/real_recipe, gitignored); figures of real people stay under OUT, never docs/.
# Stage timings are appended to OUT/timings.tsv. Re-running a stage resumes (preprocess) or redoes it.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
SHARED=${TF_FACETEX_SHARED:-../shared}
FACES=${FACES:-$SHARED/faces}
OUT=${OUT:-outputs/real_recipe}
RESULTS=${RESULTS:-docs/results}
STAGES=${STAGES:-"preprocess check samples train eval"}  # also: train_summary, record (re-write the JSONs)
NUM_SHARDS=${NUM_SHARDS:-64}
PREP_SHARDS=${PREP_SHARDS:-6}
NUM_WORKERS=${NUM_WORKERS:-1}
TRAIN_LIMIT=${TRAIN_LIMIT:-480}
TEST_LIMIT=${TEST_LIMIT:-96}
UV_SIZE=${UV_SIZE:-128}
FIT_STEPS=${FIT_STEPS:-300}
MAX_STEPS=${MAX_STEPS:-}
EVAL_LIMIT=${EVAL_LIMIT:-0}
EVAL_FIT_STEPS=${EVAL_FIT_STEPS:-150}
RUN_DIR=${RUN_DIR:-$OUT/run_small_authors}
TRAIN_SECONDS=${TRAIN_SECONDS:-1380}

mkdir -p "$OUT" "$RESULTS"
export TF_CPP_MIN_LOG_LEVEL=2

timed() {  # timed NAME cmd...: runs, appends "NAME<TAB>seconds<TAB>rc<TAB>command" to OUT/timings.tsv
    local name=$1; shift
    local t0; t0=$(date +%s.%N)
    local rc=0
    echo "[real_recipe] $name: $*" >&2
    "$@" || rc=$?
    local dt; dt=$(echo "$(date +%s.%N) - $t0" | bc)
    printf '%s\t%.1f\t%s\t%s\n' "$name" "$dt" "$rc" "$*" >> "$OUT/timings.tsv"
    echo "[real_recipe] $name: ${dt}s, exit $rc" >&2
    return $rc
}

has_stage() { [[ " $STAGES " == *" $1 "* ]]; }

if has_stage preprocess; then
    shards=$(seq -s, 0 $((PREP_SHARDS - 1)))
    timed preprocess "$PY" scripts/preprocess.py \
        --input_dir="$FACES/utkface" --input_dir="$FACES/celebamask_hq_mini/train/images" \
        --output_dir="$OUT/faces" --dataset=folder --num_shards="$NUM_SHARDS" --shard_index="$shards" \
        --test_fraction=0.15 --split_seed=0 --crop_size=224 --allow_rotation --image_format=png \
        --detector=hog --noall_faces --masker=parsing --num_workers="$NUM_WORKERS" --noprogress \
        --summary_json="$RESULTS/real_recipe_preprocess.json"
fi

if has_stage check; then
    # Train and test records must not share a photo: exact (source/sha1 of the photo bytes) and near duplicates
    # (normalised cross-correlation of the 64x64 grey aligned crops >= NEAR_DUP_NCC). The JSON also gives the
    # lowest NCC between each test crop and its own JPEG-q70 re-encode (what a re-saved copy scores) and the
    # highest NCC between different train photos (what distinct faces score). Fails on any exact overlap.
    timed check "$PY" - "$OUT/faces" "$RESULTS/real_recipe_split_check.json" "${NEAR_DUP_NCC:-0.99}" <<'EOF2'
import glob, json, sys
import cv2, numpy as np
import tensorflow as tf
from tf_facetex.data import tfrecords
folder, out, threshold = sys.argv[1], sys.argv[2], float(sys.argv[3])
def signature(gray):
    v = cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float64).ravel()
    v = (v - v.mean()) / (v.std() + 1e-6)
    return v / np.sqrt(v.size)
def load(split):
    sha, paths, sigs, reenc = [], [], [], []
    for path in sorted(glob.glob(f"{folder}/{split}-*.tfrecord")):
        for rec in tfrecords.read_records(path):
            f = tf.train.Example.FromString(rec).features.feature
            gray = cv2.imdecode(np.frombuffer(f["image/encoded"].bytes_list.value[0], np.uint8), cv2.IMREAD_GRAYSCALE)
            sha.append(f["source/sha1"].bytes_list.value[0].decode())
            paths.append(f["source/path"].bytes_list.value[0].decode())
            sigs.append(signature(gray))
            jpeg = cv2.imdecode(cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 70])[1], cv2.IMREAD_GRAYSCALE)
            reenc.append(float(signature(gray) @ signature(jpeg)))
    return sha, paths, np.stack(sigs), reenc
train_sha, train_paths, train_sig, _ = load("train")
test_sha, test_paths, test_sig, test_reenc = load("test")
exact = sorted(set(train_sha) & set(test_sha))
ncc = test_sig @ train_sig.T
near = [{"test": test_paths[i], "train": train_paths[j], "ncc": round(float(ncc[i, j]), 4)}
        for i, j in zip(*np.nonzero(ncc >= threshold))]
within = train_sig @ train_sig.T
np.fill_diagonal(within, -1.0)
result = {"train_records": len(train_sha), "test_records": len(test_sha),
          "train_unique_sha1": len(set(train_sha)), "test_unique_sha1": len(set(test_sha)),
          "shared_sha1": len(exact), "shared_sha1_list": exact[:20],
          "near_duplicate_threshold_ncc": threshold, "near_duplicate_pairs": len(near), "near_duplicate_examples": near[:20],
          "max_ncc_test_vs_train": round(float(ncc.max()), 4),
          "max_ncc_between_different_train_photos": round(float(within.max()), 4),
          "min_ncc_test_crop_vs_its_jpeg_q70_reencode": round(float(min(test_reenc)), 4),
          "rule": "exact: source/sha1 (sha1 of the photo file bytes); near: normalised cross-correlation of the "
                  "64x64 grey aligned crops"}
json.dump(result, open(out, "w"), indent=2)
print(json.dumps({k: v for k, v in result.items() if not k.endswith(("list", "examples"))}))
sys.exit(1 if exact or len(set(train_sha)) != len(train_sha) or len(set(test_sha)) != len(test_sha) else 0)
EOF2
fi

# Validation: the last VAL_SHARDS of the NUM_SHARDS content-hash shards of the train split (never trained on; the
# loss preset and the learning curves are judged on it, the test split is kept for the final table).
VAL_SHARDS=${VAL_SHARDS:-0}
VAL_LIMIT=${VAL_LIMIT:-160}
shard_files() {  # shard_files SPLIT FIRST LAST -> comma-separated record files of those shards
    local files=() i
    for ((i = $2; i <= $3; i++)); do files+=("$OUT/faces/$1-$(printf %05d "$i")-of-$(printf %05d "$NUM_SHARDS").tfrecord"); done
    local IFS=,; echo "${files[*]}"
}
if (( VAL_SHARDS > 0 )); then
    TRAIN_INPUT=$(shard_files train 0 $((NUM_SHARDS - VAL_SHARDS - 1)))
    VAL_INPUT=$(shard_files train $((NUM_SHARDS - VAL_SHARDS)) $((NUM_SHARDS - 1)))
else
    TRAIN_INPUT="$OUT/faces/train-*.tfrecord"
fi

if has_stage samples; then
    # both splits at once (two processes: the 2 shared cores are better used than by one); logs under OUT/
    timed samples_train "$PY" scripts/make_refinement_samples.py --input="$TRAIN_INPUT" \
        --out="$OUT/samples/train" --prior=fit --uv_size="$UV_SIZE" --fit_steps="$FIT_STEPS" --batch_size=8 \
        --num_shards=4 --limit="$TRAIN_LIMIT" > "$OUT/samples_train.log" 2>&1 &
    pid_train=$!
    timed samples_test "$PY" scripts/make_refinement_samples.py --input="$OUT/faces/test-*.tfrecord" \
        --out="$OUT/samples/test" --prior=fit --uv_size="$UV_SIZE" --fit_steps="$FIT_STEPS" --batch_size=8 \
        --num_shards=2 --limit="$TEST_LIMIT" > "$OUT/samples_test.log" 2>&1 &
    pid_test=$!
    wait $pid_train
    wait $pid_test
    if (( VAL_SHARDS > 0 )); then
        timed samples_val "$PY" scripts/make_refinement_samples.py --input="$VAL_INPUT" \
            --out="$OUT/samples/val" --prior=fit --uv_size="$UV_SIZE" --fit_steps="$FIT_STEPS" --batch_size=8 \
            --num_shards=1 --limit="$VAL_LIMIT" > "$OUT/samples_val.log" 2>&1
    fi
    "$PY" - "$OUT/samples" "$RESULTS/real_recipe_samples.json" <<'EOF'
import json, os, sys
root, out = sys.argv[1], sys.argv[2]
json.dump({split: json.load(open(f"{root}/{split}/summary.json")) for split in ("train", "val", "test")
           if os.path.exists(f"{root}/{split}/summary.json")}, open(out, "w"), indent=2)
EOF
fi

if has_stage train; then
    extra=()
    [[ -n "$MAX_STEPS" ]] && extra+=(--max_steps="$MAX_STEPS")
    # wall-clock bound: at TRAIN_SECONDS the run gets SIGTERM, saves a checkpoint at its step and exits 143
    timed train timeout --preserve-status --signal=TERM "$TRAIN_SECONDS" "$PY" scripts/train.py --flagfile=configs/refine_real_cpu.cfg \
        --train_data="$OUT/samples/train/samples-*.tfrecord" --eval_data="$OUT/samples/test/samples-*.tfrecord" \
        --model_dir="$RUN_DIR" --noprogress "${extra[@]}" || [[ $? == 143 ]]
fi

if has_stage train || has_stage train_summary; then
    # the run's settings, wall time, first/last logged losses and the end-of-run evaluation -> RESULTS/real_recipe_train.json
    "$PY" - "$RUN_DIR" "$RESULTS/real_recipe_train.json" "$OUT/timings.tsv" <<'EOF'
import json, pathlib, sys
run, out, timings = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
by_kind = {}
for row in rows:
    by_kind.setdefault(row.get("kind"), []).append(row)
config = json.loads((run / "run_config.json").read_text()) if (run / "run_config.json").exists() else {}
train_runs = [line.split("\t") for line in timings.read_text().splitlines() if line.startswith("train\t")]
speeds = [r["steps_per_second"] for r in by_kind.get("train", []) if r.get("steps_per_second")]
json.dump({"run_dir": str(run), "last_step": max((r["step"] for r in rows), default=0),
           "train_wall_s": float(train_runs[-1][1]) if train_runs else None,
           "train_exit": int(train_runs[-1][2]) if train_runs else None,
           "train_command": train_runs[-1][3] if train_runs else None,
           "steps_per_second_logged_min_max": [min(speeds), max(speeds)] if speeds else None,
           "loss_first": by_kind.get("loss", [None])[0], "loss_last": by_kind.get("loss", [None])[-1],
           "eval": by_kind.get("eval", []), "config": config}, open(out, "w"), indent=2, default=str)
print(f"[real_recipe] training summary: {out}", file=sys.stderr)
EOF
fi

if has_stage eval; then
    timed eval "$PY" scripts/evaluate.py --data="$OUT/samples/test/samples-*.tfrecord" \
        --variants=prior,fit --checkpoints=net="$RUN_DIR" --identity=dlib --limit="$EVAL_LIMIT" \
        --fit_steps="$EVAL_FIT_STEPS" --batch_size=8 --face_model=default \
        --json="$RESULTS/eval_real.json" --figure="$OUT/eval_real.png" \
        --title="Real test split (UTKFace + CelebAMask-HQ, content-hash split), refinement net trained on CPU"
fi
if has_stage eval || has_stage record; then
    # the command and wall time of the latest run of each stage (what produced the JSON files) -> RESULTS/
    "$PY" - "$OUT/timings.tsv" "$RESULTS/real_recipe_commands.json" <<'EOF'
import json, pathlib, sys
latest = {}
for line in pathlib.Path(sys.argv[1]).read_text().splitlines():
    name, seconds, rc, command = line.split("\t", 3)
    latest[name] = {"wall_s": float(seconds), "exit": int(rc), "command": command}
outputs = {"preprocess": "docs/results/real_recipe_preprocess.json", "check": "docs/results/real_recipe_split_check.json",
           "samples_train": "docs/results/real_recipe_samples.json", "samples_test": "docs/results/real_recipe_samples.json",
           "train": "docs/results/real_recipe_train.json", "eval": "docs/results/eval_real.json (+ .md)"}
for name, entry in latest.items():
    entry["writes"] = outputs.get(name)
json.dump({"driver": "bash scripts/run_real_recipe.sh (stages run as STAGES=...; defaults of this file)",
           "stages": latest}, open(sys.argv[2], "w"), indent=2)
EOF
fi
echo "[real_recipe] done; timings in $OUT/timings.tsv" >&2
