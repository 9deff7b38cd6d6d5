"""The shipped parsing network: the committed file, its model card, and the loader every entry point uses."""
import pathlib
import re

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SHIPPED = REPO / "saved_models" / "parsing_net"


def test_shipped_weights_match_the_model_card():
    from tf_facetex.data import parsing_net
    weights = SHIPPED / "parsing_net.keras"
    assert weights.is_file(), "saved_models/parsing_net/parsing_net.keras must be committed"
    assert weights.stat().st_size < 25_000_000
    card = (SHIPPED / "MODEL_CARD.md").read_text()
    recorded = re.search(r"sha256: `([0-9a-f]{64})`", card).group(1)
    assert parsing_net.file_sha256(weights) == recorded
    # the card reports the held-out IoU of exactly these weights, and it beats the substitute
    ious = dict(re.findall(r"^\| (\w+) \| \d+ \| ([0-9.]+) \|", card, flags=re.M))
    assert float(ious["parsing"]) > float(ious["skin"]) and float(ious["parsing"]) > 0.9


def test_default_masker_is_the_shipped_network(monkeypatch):
    from tf_facetex import pipeline
    from tf_facetex.data import parsing_net
    monkeypatch.delenv("TF_FACETEX_PARSING_NET", raising=False)
    lines = []
    finder = pipeline.FaceFinder(log=lines.append)          # what reconstruct.py builds by default
    masker = finder.face_masker()
    assert isinstance(masker, parsing_net.ParsingNetMasker)
    assert masker.weights_path.resolve() == (SHIPPED / "parsing_net.keras").resolve()
    assert len(lines) == 1 and "parsing network" in lines[0] and masker.sha256[:16] in lines[0]
    assert parsing_net.describe_masker(masker)["sha256"] == masker.sha256


def test_environment_variable_overrides_and_must_exist(tmp_path, monkeypatch):
    from tf_facetex.data import parsing_net
    from tf_facetex.errors import AssetError
    monkeypatch.setenv("TF_FACETEX_PARSING_NET", str(tmp_path / "absent.keras"))
    with pytest.raises(AssetError, match="absent.keras"):
        parsing_net.masker_from_name("parsing", log=lambda line: None)


def test_shipped_network_excludes_hair_on_a_held_out_photo(faces_dir):
    """On held-out CelebAMask-HQ photos the shipped net's mask matches the labels and keeps hair out."""
    from tf_facetex.data import parsing_net
    from tf_facetex.data.detect import FaceDetector
    from tf_facetex.evaluation import real_photos
    masker = parsing_net.masker_from_name("parsing", log=lambda line: None)
    detector = FaceDetector()
    files = real_photos.heldout_split(real_photos.celebamask_files(faces_dir / "celebamask_hq_mini" / "train"))[1]
    scored = 0
    for path in files[:4]:
        result = real_photos.celebamask_crop(path, detector)
        if result is None:
            continue
        aligned, target = result
        predicted = masker(aligned.image, aligned.landmarks)
        assert real_photos.mask_scores(predicted, target, aligned.valid)["iou"] > 0.8
        scored += 1
    assert scored >= 2


def test_model_card_from_summary():
    from tf_facetex.data import parsing_net
    summary = {"parameters": 10, "flags": {"input_size": 32, "base_filters": 4, "depth": 2, "batch_size": 4,
                                           "learning_rate": 0.1, "seed": 0},
               "num_train": 9, "num_val": 1, "num_without_detection": 0, "epochs_run": 2, "best_epoch": 2,
               "train_minutes": 0.5, "best_val_iou_input_grid": 0.7, "history": {"masked_iou": [0.5, 0.6]}}
    entry = {"num_images": 3, "iou": {"mean": 0.91, "median": 0.92, "p10": 0.8}, "precision": {"mean": 0.9},
             "recall": {"mean": 0.95}, "pixel_pooled": {"iou": 0.9}}
    card = parsing_net.model_card(summary, {"maskers": {"parsing": entry}, "no_face": []}, "ab" * 32, 1234,
                                  "train cmd", "eval cmd")
    assert "`" + "ab" * 32 + "`" in card and "2 epochs x 3 steps" in card and "| parsing | 3 | 0.9100 |" in card
    with pytest.raises(ValueError):
        parsing_net.model_card(summary, {"maskers": {}, "no_face": []}, "ab" * 32, 1, "", "")
