"""The fixed linear morphable-model decoder as a Keras layer, and the coefficient layout.

Coefficient vector (Deng et al. 2019 order, sizes read from the model, never hard-coded):
``[id (I), exp (E), tex (T), angles (3), gamma (27), translation (3)]`` -> 257 for BFM (80/64/80).
"""
import keras
import tensorflow as tf

from tf_facetex import camera, geometry
from tf_facetex.face_model.model import NUM_SH_COEFFS, MorphableModel


def is_blendshape_model(model: MorphableModel) -> bool:
    """True when expression coefficients are blend-shape weights in [0, 1] (ICT), not PCA coefficients."""
    return bool(model.exp_names) and not model.exp_names[0].startswith("exp_")

class CoefficientLayout:
    """Named slices of the flat coefficient vector for one face model."""

    def __init__(self, num_id: int, num_exp: int, num_tex: int):
        self.sizes = {"id": num_id, "exp": num_exp, "tex": num_tex, "angles": 3,
                      "gamma": NUM_SH_COEFFS, "translation": 3}
        self.slices = {}
        start = 0
        for name, size in self.sizes.items():
            self.slices[name] = slice(start, start + size)
            start += size
        self.size = start

    @classmethod
    def for_model(cls, model: MorphableModel) -> "CoefficientLayout":
        return cls(model.num_id, model.num_exp, model.num_tex)

    def split(self, coeffs):
        """[..., C] -> dict of [..., size] tensors (or arrays)."""
        return {name: coeffs[..., part] for name, part in self.slices.items()}

    def join(self, parts):
        """dict of [..., size] -> [..., C]; missing parts are zeros."""
        reference = next(iter(parts.values()))
        batch_shape = tf.shape(reference)[:-1]
        pieces = []
        for name, size in self.sizes.items():
            if name in parts:
                pieces.append(tf.cast(parts[name], tf.float32))
            else:
                pieces.append(tf.zeros(tf.concat([batch_shape, [size]], 0), tf.float32))
        return tf.concat(pieces, axis=-1)

    def to_dict(self):
        return dict(self.sizes)


class FaceDecoder(keras.layers.Layer):
    """Coefficients -> model-space vertices, per-vertex albedo and vertex normals (not trainable).

    Call with a dict ``{'id': [B, I], 'exp': [B, E], 'tex': [B, T]}`` (missing entries mean zeros) or a
    flat [B, C] coefficient vector in the `CoefficientLayout` order. Returns a dict:
    ``vertices`` [B, N, 3] (unposed, decimetres), ``albedo`` [B, N, 3] (in [0, 1] for plausible
    coefficients, not clipped), ``normals`` [B, N, 3] (unit, model frame).
    """

    def __init__(self, model: MorphableModel, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.face_model = model
        self.layout = CoefficientLayout.for_model(model)
        n = model.num_vertices
        # Bases flattened to [K, 3N] so that decoding is one matmul per part.
        self._mean_shape = tf.constant(model.mean_shape.reshape(1, 3 * n))
        self._id_basis = tf.constant(model.id_basis.reshape(model.num_id, 3 * n))
        self._exp_basis = tf.constant(model.exp_basis.reshape(model.num_exp, 3 * n))
        self._albedo_mean = tf.constant(model.albedo_mean.reshape(1, 3 * n))
        self._albedo_basis = tf.constant(model.albedo_basis.reshape(model.num_tex, 3 * n))
        self._triangles = tf.constant(model.triangles)
        self._vertex_triangles = tf.constant(model.vertex_triangles())
        # Called eagerly (the reconstruction), decoding is ~2x faster compiled with XLA on CPU (the normals'
        # gathers: 10 -> 3 ms for one ICT face); inside a graph (training, SavedModels) it is inlined.
        self._compiled_decode = tf.function(self._decode, jit_compile=True, autograph=False)

    def _part(self, coeffs, name, batch):
        size = self.layout.sizes[name]
        if isinstance(coeffs, dict):
            value = coeffs.get(name)
            if value is None:
                return tf.zeros([batch, size], tf.float32)
            return tf.cast(value, tf.float32)
        return tf.cast(coeffs[:, self.layout.slices[name]], tf.float32)

    def shape(self, id_coeffs, exp_coeffs):
        """[B, I], [B, E] -> [B, N, 3] model-space vertices."""
        flat = self._mean_shape + tf.matmul(id_coeffs, self._id_basis) + tf.matmul(exp_coeffs, self._exp_basis)
        return tf.reshape(flat, [-1, self.face_model.num_vertices, 3])

    def albedo(self, tex_coeffs):
        """[B, T] -> [B, N, 3] per-vertex albedo."""
        flat = self._albedo_mean + tf.matmul(tex_coeffs, self._albedo_basis)
        return tf.reshape(flat, [-1, self.face_model.num_vertices, 3])

    def normals(self, vertices):
        """[B, N, 3] -> [B, N, 3] unit vertex normals."""
        return geometry.vertex_normals(vertices, self._triangles, self._vertex_triangles)

    def call(self, coeffs):
        if isinstance(coeffs, dict):
            batch = tf.shape(next(v for v in coeffs.values() if v is not None))[0]
        else:
            batch = tf.shape(coeffs)[0]
        decode = self._compiled_decode if tf.executing_eagerly() else self._decode
        return decode(*(self._part(coeffs, name, batch) for name in ("id", "exp", "tex")))

    def _decode(self, id_coeffs, exp_coeffs, tex_coeffs):
        vertices = self.shape(id_coeffs, exp_coeffs)
        return {"vertices": vertices, "albedo": self.albedo(tex_coeffs), "normals": self.normals(vertices)}

    def pose(self, coeffs, angles=None, translation=None):
        """The pose step every stage shares: split -> decode -> rigid transform.

        Args:
          coeffs: [B, C] in the layout's order, or a dict of parts (needs 'angles' and 'translation' unless given).
          angles: [B, 3] radians replacing the coefficients' (None keeps them); translation: [B, 3] likewise.
        Returns:
          the `call` dict (vertices unposed, albedo, normals) plus 'parts' (the coefficient parts) and 'posed'
          [B, N, 3] (world frame, camera at z = +10).
        """
        if isinstance(coeffs, dict):
            parts = dict(coeffs)
        else:
            parts = self.layout.split(tf.convert_to_tensor(coeffs, tf.float32))
        angles = parts["angles"] if angles is None else tf.convert_to_tensor(angles, tf.float32)
        translation = parts["translation"] if translation is None else tf.convert_to_tensor(translation, tf.float32)
        decoded = self(parts)
        posed = camera.rigid_transform(decoded["vertices"], tf.cast(angles, tf.float32),
                                       tf.cast(translation, tf.float32))
        return {**decoded, "parts": parts, "posed": posed}

    def get_config(self):
        # The face model is data, not configuration: rebuild the layer from the model file.
        config = super().get_config()
        config["face_model"] = self.face_model.source
        return config
