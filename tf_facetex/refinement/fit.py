"""Detail refinement without trained weights: optimise A' and L' directly with the paper's UV-space losses.

The product's embedded default (docs/METHOD.md, "The per-image fit"). Instead of a network predicting the
detailed albedo A' (S x S x 3) and the per-texel SH light L' (S x S x 27) from (T, A), the maps themselves are
the variables, initialised at A' = A (prior albedo; T / shading where the texel was seen) and L' = L (coarse
gamma everywhere), and Adam minimises, per image,
    5 L_img + 1 L_grad + 1 L_reg-illu + 5 L_symm + 5 L_smooth (+ lambda_prior L_L1, 0 by default)
(the paper's weights; GAN and cross-perceptual terms need a population and a network, so they are off).
The light is parameterised as L' = L + a low-resolution residual (upsampled), which keeps it smooth the way the
network's light decoder does; the albedo keeps full resolution for detail. `FitRefiner` then replaces the light
by the coarse L away from the texels the photo shows (`coarse_light_where_unseen`).
"""
import dataclasses

import numpy as np
import tensorflow as tf

from tf_facetex import losses as L
from tf_facetex.refinement.base import Refiner
from tf_facetex.refinement import uv_solver

SAMPLE_KEYS = ("image", "face_mask", "proj_mask", "pixel_uv", "texture_uv", "visibility_uv", "prior_albedo_uv",
               "normals_uv", "gamma")
UNSEEN_LIGHT_MODES = ("coarse", "fit")


@dataclasses.dataclass
class UVFitConfig:
    steps: int = 150
    learning_rate: float = 0.01
    light_resolution: int = 8           # residual light grid (upsampled bilinearly to the UV size)
    weights: str = "paper"              # LossWeights preset; GAN / cross-perceptual are not used here
    # The paper's L1-to-prior weight is 1 in its first epoch only, then 0; the fit starts from the unwrapped
    # texture (or the prior where unseen), so it runs like the later epochs (measured on synthetic faces:
    # albedo si-RMSE 0.0279 with 0 vs 0.0302 with 1 and a 16x16 light grid).
    prior_weight: float = 0.0
    use_unwrapped_init: bool = True     # start A' from T / shading where the texel was seen
    # 'xla' (default): `refinement.uv_solver.fit_uv_maps`, the same objective and Adam with all steps in one
    # compiled loop (traced once per shape; ~2x faster, the same albedo on synthetic faces); 'adam': this
    # module's per-step loop (the previous algorithm, kept for the comparison).
    solver: str = "xla"
    decay: float = 1.0                  # 'xla' only: final learning rate / initial learning rate
    # The symmetry term's form (`losses.LossOptions`, `losses.symmetry_weights`): 'uniform' pulls every chart
    # texel to its mirror (the paper); 'visibility' / 'confidence' let the mirror fill only the texels the photo
    # did not show (or showed at a grazing angle); symmetry_seen_weight: the pull between two seen texels.
    # Default measured in docs/results/issue17_symmetry.md (16+16 synthetic faces): 'visibility', seen pairs by a
    # saturating L1 of scale 0.02, seen -> unseen mirror pull 1: the ghost's excess error with a leaking mask
    # 0.0438 -> 0.0166, albedo si-RMSE on unoccluded faces 0.0265 as the uniform term's.
    symmetry_weighting: str = "visibility"
    symmetry_seen_weight: float = 1.0
    symmetry_seen_scale: float = 0.02   # > 0: seen pairs pull by `losses.saturating_l1` with this scale
    symmetry_unseen_mirror_weight: float = 1.0   # the pull of a seen texel towards an unseen mirror
    # 'xla' only: values the photo shows unreliably count less (`uv_solver.exposure_weighted`): deep shadows
    # darker than dark_fraction x the face's lit-skin luminance (0: off) and values reaching saturation (> 1: off).
    dark_fraction: float = 0.0
    saturation: float = 1.01
    # Texels the coarse light leaves below this x its lit level (its attached shadow) count less in the photo terms
    # and are filled like unseen ones (`uv_solver.shadow_weight`; 0: off). 0.25 by measurement
    # (docs/results/issue20/shading_default.md): Yale B albedo consistency ratio 0.402 -> 0.275 on the evaluation
    # subjects and 0.434 -> 0.295 on six others, relighting gain +7.3 -> +8.4 dB; synthetic albedo unchanged; real
    # re-render -0.15 dB on the method's mask, -0.06 dB on the landmark hull.
    shading_fraction: float = 0.25
    # Which texels' albedo the photo terms move (`uv_solver.fit_terms`, `objective.seen_albedo`): 'seen' (default:
    # those the photo showed) or 'all' (also the unseen texels that the face mask's border pixels are rendered
    # from). With 'all' those texels took the border's mixed colours (hair, a cap's brim): a dotted dark line along
    # the hairline and grey bands in the albedo and every relit render. Measured in
    # docs/results/issue17/photo_albedo.md: albedo si-RMSE and completion error equal or lower on synthetic faces,
    # the real split's re-render on its own mask -0.71 dB (on the landmark hull -0.11 dB): the border pixels are no
    # longer explained by the albedo.
    photo_albedo: str = "seen"

    def symmetry(self):
        """The symmetry term's form as `uv_solver.symmetry_form`."""
        return uv_solver.symmetry_form(self.symmetry_weighting, self.symmetry_seen_weight, self.symmetry_seen_scale,
                                       self.symmetry_unseen_mirror_weight)



def config_with_overrides(config, overrides):
    """``config`` (a `UVFitConfig`) with fields replaced from 'name=value' strings, each value typed as the field's
    current one (bools: 1/true/yes); ValueError naming the fields on an unknown name or an empty value. For
    measuring one lever against the shipped settings (scripts/evaluate.py --fit_overrides, eval_relight.py)."""
    fields = [field.name for field in dataclasses.fields(config)]
    changes = {}
    for item in overrides:
        name, _, value = item.partition("=")
        if name not in fields or not value:
            raise ValueError(f"fit override {item!r}: expected name=value with a UVFitConfig field ({', '.join(fields)})")
        kind = type(getattr(config, name))
        changes[name] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return dataclasses.replace(config, **changes)

class UVFitRefiner:
    """Per-image optimisation of the detailed albedo and light maps from a `PriorModule` output (the raw fit)."""

    def __init__(self, uv_mask, symmetry_index=None, config: UVFitConfig = UVFitConfig()):
        self.uv_mask = tf.convert_to_tensor(uv_mask, tf.float32)          # [S, S, 1]
        self.symmetry_index = symmetry_index
        self.config = config
        loss_weights = L.LossWeights.preset(config.weights)
        self.weights = {name: (config.prior_weight if name == "prior_l1" else loss_weights.weight(name, 0))
                        for name in ("illumination", "symmetry", "smoothness", "prior_l1", "image_gradient", "image")}

    def terms(self, albedo_uv, light_uv, sample):
        """The unweighted loss terms for maps and one batch of prior outputs (dict of scalars)."""
        return uv_solver.fit_terms(albedo_uv, light_uv, sample, self.uv_mask, self.symmetry_index,
                                   self.config.symmetry(), photo_albedo=self.config.photo_albedo)

    def __call__(self, sample, start=None, groups=None, fit_albedo=True):
        """sample: dict of tensors with the refinement-sample keys (batch); start: None or {'albedo_uv',
        'light_uv'} to start from (e.g. the network's output; `uv_solver.fit_uv_maps`); groups: None or [B] ints
        (photos of one person share ONE albedo; groups of one size); fit_albedo: False fits only the lights to
        ``start``'s albedo. Returns {'albedo_uv' [B,S,S,3] ([G, ...] with groups), 'light_uv' [B,S,S,27],
        'loss' [steps] history, 'terms' final dict}. Groups and a fixed albedo need the compiled solver."""
        c = self.config
        if c.solver == "xla":
            out = uv_solver.fit_uv_maps(sample, self.uv_mask, self.symmetry_index,
                                        uv_solver.term_weights(self.weights), c.steps,
                                        c.learning_rate, c.decay, c.light_resolution, c.use_unwrapped_init,
                                        symmetry=c.symmetry(), start=start, groups=groups, fit_albedo=fit_albedo,
                                        dark_fraction=c.dark_fraction, saturation=c.saturation,
                                        shading_fraction=c.shading_fraction, photo_albedo=c.photo_albedo)
            return {"albedo_uv": out["albedo_uv"], "light_uv": out["light_uv"],
                    # the objective before the first and the last step (not every step's)
                    "loss": [float(out["loss_first"]), float(out["loss_last"])] if c.steps > 0 else [],
                    "terms": {k: float(v) for k, v in out["terms"].items()}}
        if c.solver != "adam":
            raise ValueError(f"UVFitConfig.solver must be 'adam' or 'xla', got {c.solver!r}")
        if groups is not None or not fit_albedo:
            raise ValueError("multi-photo groups and light-only fits need UVFitConfig.solver='xla'")
        sample = {k: tf.convert_to_tensor(v, tf.float32) for k, v in sample.items() if k in SAMPLE_KEYS}
        prior = sample["prior_albedo_uv"]
        batch, size = tf.shape(prior)[0], prior.shape[1]
        if start is None:
            albedo = tf.Variable(uv_solver.initial_albedo(sample, c.use_unwrapped_init))
            base_light = sample["gamma"][:, None, None, :]
        else:
            albedo = tf.Variable(tf.clip_by_value(tf.convert_to_tensor(start["albedo_uv"], tf.float32), 0.0, 1.0))
            base_light = tf.convert_to_tensor(start["light_uv"], tf.float32)
        residual = tf.Variable(tf.zeros([batch, c.light_resolution, c.light_resolution, 27]))
        optimizer = tf.keras.optimizers.Adam(c.learning_rate)

        def light():
            return base_light + tf.image.resize(residual, [size, size], method="bilinear")

        @tf.function(reduce_retracing=True)
        def step():
            with tf.GradientTape() as tape:
                total = L.weighted_total(self.terms(albedo, light(), sample), self.weights)
            grads = tape.gradient(total, [albedo, residual])
            optimizer.apply_gradients(zip(grads, [albedo, residual]))
            albedo.assign(tf.clip_by_value(albedo, 0.0, 1.0))
            return total

        history = [float(step()) for _ in range(c.steps)]
        light_uv = light()
        final = {k: float(v) for k, v in self.terms(albedo, light_uv, sample).items()}
        return {"albedo_uv": albedo.value() * self.uv_mask, "light_uv": light_uv * self.uv_mask,
                "loss": history, "terms": final}


def blur_uv(maps, sigma):
    """Separable Gaussian blur of UV maps: [B, S, S, C], sigma in texels -> [B, S, S, C] (zero padding)."""
    radius = max(1, int(round(3.0 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / float(sigma)) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    channels = int(maps.shape[-1])
    horizontal = tf.constant(np.tile(taps[None, :, None, None], [1, 1, channels, 1]))
    vertical = tf.constant(np.tile(taps[:, None, None, None], [1, 1, channels, 1]))
    out = tf.nn.depthwise_conv2d(maps, horizontal, [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(out, vertical, [1, 1, 1, 1], "SAME")


def coarse_light_where_unseen(light_uv, gamma, visibility_uv, sigma):
    """L' where the photo constrains it, the coarse L elsewhere, blended over ~2 sigma texels.

    The UV fit's light regulariser (||M_uv (L' - L)||^2) and image losses only reach texels the photo shows, so
    elsewhere (under the chin, under hair) its low-resolution light residual drifts freely and shades the render
    with dark blotches. Without evidence, the coarse light is the estimate: w = clip(2 blur(M_uv), 0, 1) is 1 on
    and just around the seen texels and fades to 0 away from them.

    Args:
      light_uv [B, S, S, 27]; gamma [B, 27] (or a [B, S, S, 27] light map the fit started from, e.g. the
        network's: the estimate where the photo says nothing); visibility_uv [B, S, S, 1]; sigma: blur in texels.
    Returns:
      [B, S, S, 27].
    """
    weight = tf.clip_by_value(2.0 * blur_uv(tf.cast(visibility_uv, tf.float32), sigma), 0.0, 1.0)
    coarse = tf.cast(gamma, tf.float32)
    if coarse.shape.rank == 2:
        coarse = coarse[:, None, None, :]
    return coarse + weight * (light_uv - coarse)


class FitRefiner(Refiner):
    """The shipped no-weights detail stage: `UVFitRefiner`, then the coarse light where the photo is silent.

    Args:
      uv_mask [S, S, 1], symmetry_index [S * S]: the renderer's; config: `UVFitConfig`.
      unseen_light: 'coarse' (default) replaces the fitted light by the coarse L away from the texels the photo
        shows (`coarse_light_where_unseen`); 'fit' keeps the raw fit everywhere.
    """

    name = "fit"
    supports_groups = True

    def __init__(self, uv_mask, symmetry_index=None, config=None, unseen_light="coarse"):
        if unseen_light not in UNSEEN_LIGHT_MODES:
            raise ValueError(f"unseen_light must be 'coarse' or 'fit', got {unseen_light!r}")
        self.config = config or UVFitConfig()
        self.unseen_light = unseen_light
        self.uv_mask = uv_mask
        self.fit = UVFitRefiner(uv_mask, symmetry_index, self.config)

    def __call__(self, prior_out, start=None, groups=None, fit_albedo=True):
        """prior_out: a `PriorModule` output batch; start: None (the fit's own start) or {'albedo_uv',
        'light_uv'} (where the photo shows nothing, the light then falls back to this map, not to gamma);
        groups: None or [B] ints, photos of one person fit ONE albedo (`UVFitRefiner`; the result's albedo_uv is
        still one map per photo, the group's); fit_albedo: False fits only the lights, to ``start``'s albedo."""
        result = self.fit(prior_out, start=start, groups=groups, fit_albedo=fit_albedo)
        if groups is not None:
            result["albedo_uv"] = tf.gather(result["albedo_uv"], np.asarray(groups, np.int32))
        light = result["light_uv"]
        if self.unseen_light == "coarse":
            size = int(light.shape[1])
            fallback = prior_out["gamma"] if start is None else start["light_uv"]
            light = coarse_light_where_unseen(light, fallback, prior_out["visibility_uv"],
                                              sigma=max(1.0, size / 32.0)) * self.uv_mask
        return {"albedo_uv": result["albedo_uv"], "light_uv": light,
                "loss_first": result["loss"][0] if result["loss"] else None,
                "loss_last": result["loss"][-1] if result["loss"] else None}

    def describe(self):
        return {"name": self.name, "steps": self.config.steps, "learning_rate": self.config.learning_rate,
                "light_resolution": self.config.light_resolution, "weights": self.config.weights,
                "unseen_light": self.unseen_light, "solver": self.config.solver,
                "symmetry_weighting": self.config.symmetry_weighting,
                "symmetry_seen_weight": self.config.symmetry_seen_weight,
                "symmetry_seen_scale": self.config.symmetry_seen_scale,
                "symmetry_unseen_mirror_weight": self.config.symmetry_unseen_mirror_weight,
                "dark_fraction": self.config.dark_fraction, "saturation": self.config.saturation,
                "shading_fraction": self.config.shading_fraction, "photo_albedo": self.config.photo_albedo}
