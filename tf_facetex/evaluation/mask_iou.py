"""The face masks against CelebAMask-HQ's face labels: mean IoU in the aligned 224 crop
(``python -m tf_facetex.evaluation.mask_iou --celebamask_dir DIR --num_images 40``)."""
import argparse
import json
import pathlib

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from tf_facetex.conventions import CROP_SIZE
from tf_facetex.data.align import align_face
from tf_facetex.data.detect import FaceDetector
from tf_facetex.data.images import load_image
from tf_facetex.data.masks import FaceMasker, LandmarkHullMasker, LandmarkSkinMasker, celebamask_face_mask, mask_iou
from tf_facetex.errors import NoFaceError


def evaluate_on_celebamask(masker: FaceMasker, folder, num_images: int = 40, start: int = 0, detector=None,
                           progress: bool = True):
    """Mean IoU of a masker against CelebAMask-HQ face labels, measured in the aligned 224 crop.

    Args:
      masker: a FaceMasker.
      folder: a folder with ``images/*.jpg`` and ``masks/*.png`` (palette label maps, same stem).
      num_images, start: images ``start .. start + num_images - 1`` by sorted name.
      detector: a ``FaceDetector`` (default HOG).
    Returns:
      dict(mean_iou, median_iou, min_iou, num_images, num_no_face, per_image {stem: iou}).
    """
    folder = pathlib.Path(folder)
    detector = detector or FaceDetector()
    files = sorted((folder / "images").glob("*.jpg"))[start:start + num_images]
    per_image, no_face = {}, 0
    iterator = files
    if progress:
        iterator = tqdm(files, desc="mask IoU", unit="img")
    for path in iterator:
        image = load_image(path)
        try:
            face = detector.detect(image, name=str(path))[0]
        except NoFaceError:
            no_face += 1
            continue
        aligned = align_face(image, face.landmarks)
        labels = np.asarray(Image.open(folder / "masks" / f"{path.stem}.png"))
        if labels.shape != image.shape[:2]:
            labels = cv2.resize(labels, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        target = cv2.warpAffine(celebamask_face_mask(labels), aligned.transform, (CROP_SIZE, CROP_SIZE),
                                flags=cv2.INTER_NEAREST, borderValue=0)
        predicted = masker(aligned.image, aligned.landmarks)
        per_image[path.stem] = mask_iou(predicted, target, aligned.valid)
    values = np.array(list(per_image.values())) if per_image else np.zeros([0])
    return {"mean_iou": float(values.mean()) if len(values) else float("nan"),
            "median_iou": float(np.median(values)) if len(values) else float("nan"),
            "min_iou": float(values.min()) if len(values) else float("nan"),
            "num_images": len(per_image), "num_no_face": no_face, "per_image": per_image}


def _main(argv=None):
    parser = argparse.ArgumentParser(description="Mean IoU of the landmark+skin face mask on CelebAMask-HQ labels.")
    parser.add_argument("--celebamask_dir", required=True, help="folder with images/ and masks/")
    parser.add_argument("--num_images", type=int, default=40, help="how many images (sorted by name)")
    parser.add_argument("--start", type=int, default=0, help="index of the first image (sorted by name)")
    parser.add_argument("--masker", choices=["skin", "hull"], default="skin", help="LandmarkSkinMasker or hull only")
    args = parser.parse_args(argv)
    masker = LandmarkSkinMasker() if args.masker == "skin" else LandmarkHullMasker()
    result = evaluate_on_celebamask(masker, args.celebamask_dir, args.num_images, args.start)
    result.pop("per_image")
    print(json.dumps(result))


if __name__ == "__main__":
    _main()
