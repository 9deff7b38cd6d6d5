"""Constants every layer shares (no TensorFlow): the aligned crop size.

`CROP_SIZE`: the side of the aligned face crop (the alignment template's size), the default image size of the
prior, the refinement samples and the exports, and the size at which Deng's camera (focal 1015 px) and the landmark
errors (pixels of a 224 crop) are defined (docs/METHOD.md, "Conventions").
"""
CROP_SIZE = 224
