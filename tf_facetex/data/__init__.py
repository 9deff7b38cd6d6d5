"""Data: photos in, aligned 224 crops with 68 landmarks and face masks, TFRecord shards, tf.data pipelines.

Modules (by concept):
- ``images``: read / decode / validate any photo -> uint8 RGB, or one clear ``ImageError``;
- ``detect``: dlib face detection + 68 landmarks (``FaceDetector``);
- ``align``: Deng et al.'s 224 crop (``ALIGN_TEMPLATE_224``), its transform and inverse, ``paste_back``,
  and ``FacePreprocessor`` (photo -> aligned faces with masks);
- ``masks``: face masks (``FaceMasker`` interface, ``LandmarkSkinMasker``), IoU against CelebAMask-HQ;
- ``datasets``: folder and CelebA readers, deduplication and deterministic splits;
- ``tfrecords``: the example format, the resumable sharded writer, ``make_dataset``.
Importing this package does not import TensorFlow or dlib (both load on first use).
"""
from tf_facetex.data.align import (ALIGN_TEMPLATE_224, CROP_SIZE, AlignedFace, FacePreprocessor, align_face,
                                   alignment_transform, apply_affine, estimate_similarity, five_points,
                                   invert_affine, paste_back)
from tf_facetex.data.datasets import (celeba_split, dedupe_by_content, hash_files, list_image_files, read_celeba,
                                      split_by_hash)
from tf_facetex.data.images import IMAGE_EXTENSIONS, MAX_PIXELS, MIN_SIDE, content_hash, decode_image, load_image
from tf_facetex.data.masks import FaceMasker, LandmarkHullMasker, LandmarkSkinMasker, mask_iou


def __getattr__(name):
    # tf.data / dlib entry points, imported lazily
    if name in ("make_dataset", "encode_example", "parse_example", "run_preprocess", "PreprocessConfig"):
        from tf_facetex.data import tfrecords
        return getattr(tfrecords, name)
    if name in ("FaceDetector", "Face", "detect_faces"):
        from tf_facetex.data import detect
        return getattr(detect, name)
    raise AttributeError(f"module 'tf_facetex.data' has no attribute {name!r}")
