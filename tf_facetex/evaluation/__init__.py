"""Evaluation on real photos with ground truth (CelebAMask-HQ parsing labels, AFLW2000-3D landmarks/pose).

- ``real_photos``: mask metrics (IoU, precision, recall), landmark NME, yaw bins, pose-sign estimation,
  dataset readers and the worst-case figure; used by ``scripts/eval_masks.py``,
  ``scripts/eval_landmarks.py`` and ``scripts/train_parsing_net.py``.
- ``detection``: detection + alignment success rates of detector configurations (``scripts/eval_detection.py``).
- ``relight``: albedo consistency across lights and cross-relighting PSNR on a multi-light set
  (``scripts/eval_relight.py``).
Importing this package does not import TensorFlow or dlib.
"""
