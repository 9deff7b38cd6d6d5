"""Exceptions whose message is meant for the user: one readable line naming what went wrong and where.

Scripts print `str(error)` for these (no traceback unless --verbose); anything else is a bug.
"""


class FaceTexError(Exception):
    """Base class: an expected failure with a user-facing message."""


class AssetError(FaceTexError):
    """A face model, weights file or other asset is missing, truncated or malformed."""


class ImageError(FaceTexError):
    """An input image cannot be used (unreadable, not an image, too small, too large, ...)."""


class NoFaceError(ImageError):
    """No face was found in an image."""


class TrainingError(FaceTexError):
    """Training cannot continue (e.g. non-finite loss); the last good checkpoint is kept."""
