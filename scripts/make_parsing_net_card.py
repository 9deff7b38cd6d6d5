"""Ships a trained parsing network: copies the weights into saved_models/parsing_net/ and writes its model card.

  .venv/bin/python scripts/make_parsing_net_card.py --weights outputs/parsing_net/parsing_net.keras \
      --history outputs/parsing_net/parsing_net.history.json --eval_json docs/results/eval_masks.json

The evaluation JSON must come from ``scripts/eval_masks.py --parsing_weights <the same file>`` (the sha256 of the
evaluated file is checked against the shipped one). Writes (atomically) ``<out_dir>/parsing_net.keras``,
``<out_dir>/parsing_net.history.json`` and ``<out_dir>/MODEL_CARD.md``.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402

from tf_facetex import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("weights", "outputs/parsing_net/parsing_net.keras", "Trained model (.keras) to ship.")
flags.DEFINE_string("history", None, "Training summary JSON (default: <weights without suffix>.history.json).")
flags.DEFINE_string("eval_json", "docs/results/eval_masks.json", "scripts/eval_masks.py result on the held-out 200.")
flags.DEFINE_string("out_dir", "saved_models/parsing_net", "Where the shipped files go.")
flags.DEFINE_string("train_command", ".venv/bin/python scripts/train_parsing_net.py --flagfile=configs/parsing_net.cfg",
                    "How the weights were trained (recorded in the card).")
flags.DEFINE_string("eval_command", "nice -n 5 .venv/bin/python scripts/eval_masks.py --json docs/results/eval_masks.json "
                    "--parsing_weights saved_models/parsing_net/parsing_net.keras --worst_png outputs/results/mask_worst_cases.png",
                    "How the evaluation was run.")
MAX_BYTES = 25 * 1000 * 1000  # the repository keeps every shipped file below 25 MB


def main(argv):
    del argv
    import json
    import pathlib
    import shutil

    from tf_facetex import io_utils
    from tf_facetex.data import parsing_net
    from tf_facetex.errors import AssetError

    weights = pathlib.Path(FLAGS.weights)
    if not weights.is_file():
        raise AssetError(f"{weights}: not found")
    size = weights.stat().st_size
    if size >= MAX_BYTES:
        raise AssetError(f"{weights}: {size / 1e6:.1f} MB, over the 25 MB a shipped file may have")
    history = pathlib.Path(FLAGS.history or os.path.splitext(FLAGS.weights)[0] + ".history.json")
    summary = json.loads(history.read_text())
    eval_result = json.loads(pathlib.Path(FLAGS.eval_json).read_text())
    sha256 = parsing_net.file_sha256(weights)
    evaluated = eval_result.get("parsing_weights")
    if not evaluated or not pathlib.Path(evaluated).is_file() or parsing_net.file_sha256(evaluated) != sha256:
        raise AssetError(f"{FLAGS.eval_json} evaluated {evaluated!r}, not a file identical to {weights}")
    out_dir = pathlib.Path(FLAGS.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "parsing_net.keras"
    if not target.exists() or not os.path.samefile(target, weights):
        with io_utils.atomic_path(target) as tmp:
            shutil.copyfile(weights, tmp)
    io_utils.write_json(out_dir / "parsing_net.history.json", summary)
    card = parsing_net.model_card(summary, eval_result, sha256, size, FLAGS.train_command, FLAGS.eval_command)
    io_utils.write_text(out_dir / "MODEL_CARD.md", card)
    print(f"shipped {target} (sha256 {sha256}) and {out_dir / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    cli.run(main)
