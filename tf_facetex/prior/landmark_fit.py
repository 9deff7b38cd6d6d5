"""Stage 1 of the fitting path: pose, identity and expression from 68 2D landmarks (no trained weights).

Minimises the weighted squared reprojection error of the model's 68 landmark vertices plus Gaussian
priors on the identity coefficients and a prior on the expression (Gaussian for PCA expression bases,
a [0, 1] box for blend-shape weights such as ICT's ARKit shapes), with Adam, batched, inside one
`tf.function`. Only the 68 landmark rows of the bases are used, so a step costs microseconds.

Photos of one person (``groups``) share ONE identity: its variable is per group and gathered per photo, the
reprojection terms of the group's photos add up (each photo is evidence about the same face) and the identity
prior counts once per group; expression and pose stay per photo. Every photo its own group is the single-photo
fit.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from tf_facetex import camera
from tf_facetex.conventions import CROP_SIZE
from tf_facetex.face_model.decoder import is_blendshape_model
from tf_facetex.face_model.model import MorphableModel
from tf_facetex.prior.pose_init import initial_pose


def deng_landmark_weights() -> np.ndarray:
    """[68] weights of Deng et al.'s landmark loss: 20 on the nose (28-30) and the inner mouth (60-67)."""
    weights = np.ones(68, np.float32)
    weights[28:31] = 20.0
    weights[60:68] = 20.0
    return weights


@dataclasses.dataclass
class LandmarkFitConfig:
    image_size: int = CROP_SIZE
    steps: int = 300
    learning_rate: float = 0.03
    id_prior: float = 2.0          # weight of sum(id^2) against the mean squared pixel error
    exp_prior: float = 2.0         # weight of sum(exp^2) (PCA) or of the distance to [0, 1] (blend shapes)
    num_id: int = 0                # identity modes to fit (0 = all)
    jaw_weight: float = 0.5        # the contour landmarks slide along the silhouette when the head turns
    landmark_weights: str = "deng"  # 'deng' or 'uniform'


def group_index(groups, batch):
    """Photo -> group indices: None (each photo alone) or [B] ints -> (int32 [B], G). Raises ValueError unless the
    values are 0..G-1, each used (a group without photos would have an identity nothing constrains)."""
    if groups is None:
        return np.arange(batch, dtype=np.int32), batch
    groups = np.asarray(groups)
    if groups.shape != (batch,) or (batch and not np.issubdtype(groups.dtype, np.integer)):
        raise ValueError(f"groups must be {batch} integers (one per photo), got shape {groups.shape}")
    num_groups = int(groups.max()) + 1 if batch else 0
    if batch and (groups.min() < 0 or len(np.unique(groups)) != num_groups):
        raise ValueError(f"groups must use every value 0..G-1, got {sorted(set(groups.tolist()))}")
    return groups.astype(np.int32), num_groups


class LandmarkFitter:
    """Fits [B, 68, 2] landmarks; build once per model and config, call on any batch size."""

    def __init__(self, model: MorphableModel, config: LandmarkFitConfig = LandmarkFitConfig()):
        self.model = model
        self.config = config
        lm = model.landmark_indices
        num_id = config.num_id or model.num_id
        self.num_id = min(num_id, model.num_id)
        self._mean = tf.constant(model.mean_shape[lm])                       # [68, 3]
        self._id_basis = tf.constant(model.id_basis[: self.num_id][:, lm])   # [I, 68, 3]
        self._exp_basis = tf.constant(model.exp_basis[:, lm])                # [E, 68, 3]
        weights = deng_landmark_weights() if config.landmark_weights == "deng" else np.ones(68, np.float32)
        weights[:17] *= config.jaw_weight
        self._weights = tf.constant(weights / weights.sum())
        self._blendshapes = is_blendshape_model(model)
        self._optimise = self._build_optimise()

    def landmarks_3d(self, id_coeffs, exp_coeffs):
        """[B, I], [B, E] -> [B, 68, 3] model-space landmarks."""
        return (self._mean + tf.einsum("bk,knc->bnc", id_coeffs, self._id_basis)
                + tf.einsum("bk,knc->bnc", exp_coeffs, self._exp_basis))

    def project(self, id_coeffs, exp_coeffs, angles, translation):
        """-> [B, 68, 2] projected landmarks."""
        posed = camera.rigid_transform(self.landmarks_3d(id_coeffs, exp_coeffs), angles, translation)
        return camera.project(posed, self.config.image_size)[0]

    def _loss(self, target, groups, id_coeffs, exp_coeffs, angles, translation):
        """Scalar objective: target [B, 68, 2], groups [B] int32 (photo -> identity row), id_coeffs [G, I],
        exp_coeffs [B, E], angles / translation [B, 3]."""
        pixels = self.project(tf.gather(id_coeffs, groups), exp_coeffs, angles, translation)
        squared = tf.reduce_sum(tf.square(pixels - target), axis=-1)         # [B, 68]
        data = tf.reduce_sum(squared * self._weights, axis=-1)               # [B] weighted mean px^2
        id_term = self.config.id_prior * tf.reduce_sum(tf.square(id_coeffs), axis=-1) / 100.0   # [G]
        # Each photo carries 1/n of its group's prior (n photos): once per group, and a photo alone sums its terms in
        # the single-photo fit's order (the same floats).
        sizes = tf.math.unsorted_segment_sum(tf.ones_like(groups, tf.float32), groups, tf.shape(id_coeffs)[0])
        id_term = tf.gather(id_term / sizes, groups)                                                  # [B]
        if self._blendshapes:
            outside = tf.nn.relu(-exp_coeffs) + tf.nn.relu(exp_coeffs - 1.0)
            exp_term = self.config.exp_prior * (tf.reduce_sum(tf.square(outside), -1) * 100.0
                                                + tf.reduce_sum(tf.square(exp_coeffs), -1) / 100.0)
        else:
            exp_term = self.config.exp_prior * tf.reduce_sum(tf.square(exp_coeffs), axis=-1) / 100.0
        return tf.reduce_sum(data + id_term + exp_term)

    def __call__(self, landmarks_2d, groups=None):
        """Fits a batch.

        Args:
          landmarks_2d: [B, 68, 2] pixel coordinates in the `image_size` crop.
          groups: None (every photo its own face) or [B] ints in 0..G-1, every value used: photos with the same
            value are one person and get one identity (`group_index`).
        Returns:
          dict with 'id' [B, model.num_id] (modes beyond ``num_id`` are 0; the group's identity for each of its
          photos), 'exp' [B, E], 'angles' [B, 3], 'translation' [B, 3], 'landmarks' [B, 68, 2] (fitted
          projection) and 'landmark_error' [B] (mean pixel distance, unweighted).
        """
        target = np.asarray(landmarks_2d, np.float32)
        batch = target.shape[0]
        groups, num_groups = group_index(groups, batch)
        angles0, translation0 = initial_pose(target, self.model.mean_landmarks(), self.config.image_size)
        initial = (tf.zeros([num_groups, self.num_id]), tf.zeros([batch, self.model.num_exp]),
                   tf.constant(angles0, tf.float32), tf.constant(translation0, tf.float32))
        fitted_values = self._fit_by_group(target, groups, num_groups, initial) if self.config.steps > 0 else initial
        id_coeffs, exp_coeffs, angles, translation = fitted_values
        id_coeffs = tf.gather(id_coeffs, groups)
        if self._blendshapes:
            exp_coeffs = tf.clip_by_value(exp_coeffs, 0.0, 1.0)
        fitted = self.project(id_coeffs, exp_coeffs, angles, translation)
        error = tf.reduce_mean(tf.norm(fitted - target, axis=-1), axis=-1)
        full_id = tf.pad(id_coeffs, [[0, 0], [0, self.model.num_id - self.num_id]])
        return {"id": full_id.numpy(), "exp": exp_coeffs.numpy(), "angles": angles.numpy(),
                "translation": translation.numpy(), "landmarks": fitted.numpy(), "landmark_error": error.numpy()}

    def _fit_by_group(self, target, groups, num_groups, initial):
        """The compiled fit, one group (one photo unless ``groups``) at a time: XLA compiles one program per batch
        shape and its float rounding differs between programs, so a batched call gives exactly the one-at-a-time
        result only if every group runs through the same shape. -> fitted (id [G, I], exp, angles, translation
        [B, ...])."""
        id_init, *per_photo_init = initial
        rows = [np.flatnonzero(groups == group) for group in range(num_groups)]
        fits = [self._optimise(tf.constant(target[r]), tf.zeros([len(r)], tf.int32), id_init[g:g + 1],
                               *(tf.gather(x, r) for x in per_photo_init)) for g, r in enumerate(rows)]
        photo_order = np.argsort(np.concatenate(rows))       # group-major rows -> the batch's order
        return (tf.concat([fit[0] for fit in fits], 0),
                *(tf.gather(tf.concat([fit[k] for fit in fits], 0), photo_order) for k in (1, 2, 3)))

    def _build_optimise(self):
        """One `tf.function` for every call and batch size: Adam written out on tensors (no tf.Variables, whose
        fresh creation per call made the old version retrace every time, ~seconds per fit)."""
        steps, learning_rate = self.config.steps, self.config.learning_rate
        pose_steps = steps // 5  # pose first: identity must not absorb a wrong head rotation
        beta_1, beta_2, epsilon = 0.9, 0.999, 1e-7  # Keras Adam's defaults and update rule
        spec = [tf.TensorSpec([None, 68, 2], tf.float32), tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([None, self.num_id], tf.float32),
                tf.TensorSpec([None, self.model.num_exp], tf.float32), tf.TensorSpec([None, 3], tf.float32),
                tf.TensorSpec([None, 3], tf.float32)]

        # XLA fuses the loop's many small ops (a few hundred a step on [B, 68] tensors): ~140 -> ~8 ms for one
        # photo on CPU. One program per batch shape (`_fit_by_group` keeps batches equal to one at a time).
        @tf.function(input_signature=spec, jit_compile=True)
        def optimise(target, groups, *initial):
            def body(step, values, first, second):
                with tf.GradientTape() as tape:
                    tape.watch(values)
                    loss = self._loss(target, groups, *values)
                grads = tape.gradient(loss, values)
                shape_on = tf.cast(step >= pose_steps, tf.float32)
                grads = [grads[0] * shape_on, grads[1] * shape_on, grads[2], grads[3]]
                t = tf.cast(step + 1, tf.float32)
                alpha = learning_rate * tf.sqrt(1.0 - beta_2 ** t) / (1.0 - beta_1 ** t)
                first = [m + (g - m) * (1.0 - beta_1) for m, g in zip(first, grads)]
                second = [v + (tf.square(g) - v) * (1.0 - beta_2) for v, g in zip(second, grads)]
                values = [x - alpha * m / (tf.sqrt(v) + epsilon) for x, m, v in zip(values, first, second)]
                return step + 1, values, first, second

            zeros = [tf.zeros_like(x) for x in initial]
            _, values, _, _ = tf.while_loop(lambda step, *_: step < steps, body,
                                            (tf.constant(0), list(initial), zeros, list(zeros)))
            return values

        return optimise
