"""Stage 2 of the fitting path: albedo coefficients and the 27 SH coefficients from the photo.

With the geometry fixed (stage 1), the Lambertian image model is bilinear:
    colour_c(p) = albedo_c(p) * sum_k Y_k(n(p)) gamma'_{c,k},   albedo(p) = mean(p) + sum_j basis_j(p) beta_j
so alternating *linear* least squares solves it exactly at each half-step (light given albedo, then albedo
given light), batched in TF with ridge priors: gamma towards the ambient-only light (Deng's gamma = 0) and
beta towards the mean (Gaussian prior). Pixels are those of the face mask (the skin substitute or a parsing
network, times the projected face), subsampled for speed, and reweighted each round (Huber-like IRLS) so that
shadows, highlights and occluders the SH model cannot explain do not drag the fit.

Models without an albedo basis (ICT-FaceKit before `build_albedo_model.py`) get a per-channel tone instead
(3 multipliers of the uniform albedo). Light level and skin tone are then exactly ambiguous (their product
is what the photo shows; Deep3DFaceReconstruction issue #45), so the fit is normalised to a reference light:
each channel's light is rescaled so that its DC equals the ambient 0.8, and the tone takes the inverse
factor. The image model is unchanged; the albedo carries colour and brightness, the light only its shape.

Photos of one person (``groups``) share ONE albedo (beta, or the tone): its half-step solves one ridge problem
over the pixels of all the group's photos (their normal equations add up), while each photo keeps its own
light; the reference-light normalisation then uses the group's mean light level. Every photo its own group is the
single-photo fit.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from tf_facetex import sh
from tf_facetex.prior.landmark_fit import group_index


@dataclasses.dataclass
class PhotometricFitConfig:
    num_pixels: int = 4096         # sampled face pixels per image
    rounds: int = 4                # alternations light <-> albedo
    light_prior: float = 1e-2      # ridge weight on gamma (towards ambient only), per pixel
    albedo_prior: float = 1e-4     # ridge weight on beta (or on tone - 1), per pixel
    robust_scale: float = 0.08     # residual (colour units) beyond which pixels are down-weighted
    saturation: float = 0.98       # pixels brighter than this in any channel are ignored
    seed: int = 0


def _sample_pixels(mask, num, seed):
    """Random pixel indices inside each mask: mask [B, H, W] bool -> (flat index [B, num], valid [B, num]).

    The random order depends on the pixel position only (not on the image's place in the batch)."""
    batch = tf.shape(mask)[0]
    flat = tf.reshape(tf.cast(mask, tf.float32), [batch, -1])
    # One draw per pixel position, shared by the batch: an image gets the same sample alone or at any place in a
    # batch (a [B, H*W] draw would give row b other numbers than row 0, so batched results would differ).
    noise = tf.random.stateless_uniform(tf.shape(flat)[1:], seed=[seed, 1])[None]
    scores = flat * (1.0 + noise) - (1.0 - flat)       # masked pixels first, in random order
    top = tf.math.top_k(scores, k=num)
    return top.indices, top.values > 0.0


def _gather_rows(values, index):
    """values [B, P, C], index [B, K] -> [B, K, C]."""
    return tf.gather(values, index, batch_dims=1)


def _interpolate_at(vertex_values, triangles, triangle_id, barycentrics):
    """Per-vertex values [B, N, C] (or [N, C]) at sampled pixels: triangle_id [B, K], barycentrics [B, K, 3]."""
    corners = tf.gather(triangles, tf.maximum(triangle_id, 0))                      # [B, K, 3]
    if vertex_values.shape.rank == 2:
        values = tf.gather(vertex_values, corners)                                  # [B, K, 3, C]
    else:
        values = tf.gather(vertex_values, corners, batch_dims=1)
    return tf.reduce_sum(values * barycentrics[..., None], axis=-2)


def _ridge_solve(design, target, weights, prior, prior_mean, groups=None, num_groups=None):
    """Weighted ridge least squares per batch element, or per group of batch elements.

    design [B, M, D], target [B, M], weights [B, M], prior scalar (per row of data), prior_mean [B, D] (or [G, D])
    -> [B, D] minimising sum w (design x - target)^2 + prior * M_eff * |x - prior_mean|^2, M_eff = sum w + 1.
    With ``groups`` [B] int32 (values 0..num_groups-1): one x per group [G, D], whose data are the rows of all
    its elements (their normal equations add up).
    """
    # In float64: a float32 batched matmul sums in an order that depends on the batch size (~1e-7 relative), so
    # the same photo's light differed alone and in a batch; the UV fit then amplified it (issue 19, item 3).
    design, target, weights, prior_mean = (tf.cast(x, tf.float64) for x in (design, target, weights, prior_mean))
    weighted = design * weights[..., None]
    normal = tf.matmul(design, weighted, transpose_a=True)                          # [B, D, D]
    rhs = tf.linalg.matvec(tf.transpose(weighted, [0, 2, 1]), target)               # [B, D]
    count = tf.reduce_sum(weights, axis=1)                                          # [B]
    if groups is not None:
        normal, rhs, count = (tf.math.unsorted_segment_sum(x, groups, num_groups) for x in (normal, rhs, count))
    count = count[:, None, None] + 1.0
    ridge = prior * count * tf.eye(tf.shape(normal)[-1], batch_shape=[tf.shape(normal)[0]], dtype=tf.float64)
    rhs = rhs + prior * count[:, :, 0] * prior_mean
    return tf.cast(tf.linalg.solve(normal + ridge, rhs[..., None])[..., 0], tf.float32)


class PhotometricFitter:
    """Fits albedo coefficients (or a tone) and gamma to images, given a rasterised fitted mesh."""

    def __init__(self, model, config: PhotometricFitConfig = PhotometricFitConfig()):
        self.model = model
        self.config = config
        self.triangles = tf.constant(model.triangles)
        self.albedo_mean = tf.constant(model.albedo_mean)                           # [N, 3]
        self.albedo_basis = tf.constant(np.transpose(model.albedo_basis, (1, 2, 0)))  # [N, 3, T]
        self.has_basis = model.num_tex > 0

    def __call__(self, image, face_mask, raster, vertex_normals, tex_coeffs=None, groups=None):
        """Fits a batch.

        Args:
          image: [B, H, W, 3] in [0, 1]; face_mask: [B, H, W, 1] pixels to fit (skin).
          raster: the `Raster` of the fitted, posed mesh (renderer.rasterize).
          vertex_normals: [B, N, 3] camera-frame unit normals of the posed mesh.
          tex_coeffs: optional starting albedo coefficients [B, T] (a group starts from its photos' mean).
          groups: None (every photo its own face) or [B] ints 0..G-1: photos of one person share the albedo
            (`landmark_fit.group_index`).
        Returns:
          dict: 'tex' [B, T] (zeros if no basis), 'tone' [B, 3] (ones if a basis), both the group's for each of
          its photos, 'gamma' [B, 27], 'photometric_error' [B] (mean absolute residual on the fitted pixels),
          'num_pixels' [B].
        """
        c = self.config
        image = tf.convert_to_tensor(image, tf.float32)
        batch = tf.shape(image)[0]
        groups, num_groups = group_index(groups, int(image.shape[0]))
        groups = tf.constant(groups)
        per_photo = lambda values: tf.gather(values, groups)  # noqa: E731 - a group's value for each photo
        usable = (face_mask[..., 0] > 0.5) & (raster.triangle_id >= 0)
        usable &= tf.reduce_max(image, axis=-1) < c.saturation
        index, valid = _sample_pixels(usable, c.num_pixels, c.seed)
        weights = tf.cast(valid, tf.float32)
        colours = _gather_rows(tf.reshape(image, [batch, -1, 3]), index)                        # [B, K, 3]
        triangle_id = tf.gather(tf.reshape(raster.triangle_id, [batch, -1]), index, batch_dims=1)
        bary = _gather_rows(tf.reshape(raster.barycentrics, [batch, -1, 3]), index)
        normals = tf.math.l2_normalize(_interpolate_at(vertex_normals, self.triangles, triangle_id, bary), -1)
        basis_sh = sh.sh_basis(normals)                                                        # [B, K, 9]
        mean = _interpolate_at(self.albedo_mean, self.triangles, triangle_id, bary)            # [B, K, 3]
        if self.has_basis:
            num_tex = self.model.num_tex
            flat_basis = tf.reshape(self.albedo_basis, [self.model.num_vertices, 3 * num_tex])
            basis = tf.reshape(_interpolate_at(flat_basis, self.triangles, triangle_id, bary),
                               [batch, -1, 3, num_tex])                                        # [B, K, 3, T]
            beta = (tf.zeros([num_groups, num_tex]) if tex_coeffs is None else
                    tf.math.unsorted_segment_mean(tf.convert_to_tensor(tex_coeffs, tf.float32), groups, num_groups))
        tone = tf.ones([num_groups, 3])
        gamma_prime = tf.tile(sh.with_ambient(tf.zeros([27]))[None], [batch, 1])               # ambient only
        pixel_weights = tf.tile(weights[..., None], [1, 1, 3])
        for _ in range(c.rounds):
            albedo = self._albedo(mean, basis if self.has_basis else None,
                                  per_photo(beta) if self.has_basis else None, per_photo(tone))
            # Light given albedo: per channel, colour = (albedo * Y) . gamma'.
            design = albedo[..., None] * basis_sh[:, :, None, :]                               # [B, K, 3, 9]
            gammas = []
            for ch in range(3):
                gammas.append(_ridge_solve(design[:, :, ch], colours[..., ch], pixel_weights[..., ch],
                                           c.light_prior, gamma_prime[:, ch * 9:(ch + 1) * 9]))
            gamma_prime = tf.concat(gammas, axis=-1)
            shading = tf.reduce_sum(basis_sh[:, :, None, :] * tf.reshape(gamma_prime, [batch, 1, 3, 9]), -1)
            # Albedo given light: colour = shading * (mean + basis beta)  (or shading * mean * tone).
            if self.has_basis:
                design = tf.reshape(shading[..., None] * basis, [batch, -1, self.model.num_tex])
                target = tf.reshape(colours - shading * mean, [batch, -1])
                beta = _ridge_solve(design, target, tf.reshape(pixel_weights, [batch, -1]), c.albedo_prior,
                                    tf.zeros_like(beta), groups, num_groups)
            else:
                tones = []
                for ch in range(3):
                    design = (shading[..., ch] * mean[..., ch])[..., None]
                    tones.append(_ridge_solve(design, colours[..., ch], pixel_weights[..., ch], c.albedo_prior,
                                              tf.ones([num_groups, 1]), groups, num_groups)[:, 0])
                tone = tf.stack(tones, axis=-1)
            albedo = self._albedo(mean, basis if self.has_basis else None,
                                  per_photo(beta) if self.has_basis else None, per_photo(tone))
            residual = colours - albedo * shading
            # IRLS (Huber): pixels the SH model cannot explain (cast shadows, highlights, occluders) count less.
            magnitude = tf.norm(residual, axis=-1)
            robust = tf.minimum(1.0, c.robust_scale / tf.maximum(magnitude, 1e-6))
            pixel_weights = tf.tile((weights * robust)[..., None], [1, 1, 3])
        if not self.has_basis:
            # Resolve the tone/light ambiguity: white light at the reference ambient level (module docstring).
            # A group's photos share the tone: one factor per group, their mean light level.
            dc = tf.maximum(tf.reshape(gamma_prime, [batch, 3, 9])[:, :, 0], 1e-3)             # [B, 3]
            factor = tf.math.unsorted_segment_mean(dc / sh.AMBIENT_DC, groups, num_groups)    # [G, 3]
            tone = tone * factor
            gamma_prime = tf.reshape(tf.reshape(gamma_prime, [batch, 3, 9]) / per_photo(factor)[..., None],
                                     [batch, 27])
        error = tf.math.divide_no_nan(tf.reduce_sum(tf.reduce_mean(tf.abs(residual), -1) * weights, 1),
                                      tf.reduce_sum(weights, 1))
        gamma = gamma_prime - sh.with_ambient(tf.zeros([27]))
        tex = per_photo(beta) if self.has_basis else tf.zeros([batch, self.model.num_tex])
        return {"tex": tex, "tone": per_photo(tone), "gamma": gamma, "photometric_error": error,
                "num_pixels": tf.reduce_sum(weights, 1)}

    @staticmethod
    def _albedo(mean, basis, beta, tone):
        albedo = mean if basis is None else mean + tf.einsum("bkct,bt->bkc", basis, beta)
        return albedo * tone[:, None, :]
