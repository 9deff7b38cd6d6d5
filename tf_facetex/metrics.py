"""Image and albedo metrics (the paper's Table 1 columns and ground-truth albedo errors).

All functions take NHWC float images in [0, 1] and a mask [B, H, W, 1] (1 = counted), and return one
value per image ([B]); average over the batch yourself. Empty masks give NaN-free zeros (L1/RMSE) or
the cap (PSNR), and are reported by `mask_area`.
"""
import numpy as np
import tensorflow as tf

PSNR_CAP = 100.0  # dB: what identical images report instead of +inf


def _mask(mask, like):
    mask = tf.cast(tf.convert_to_tensor(mask), like.dtype)
    if mask.shape.rank == like.shape.rank - 1:
        mask = mask[..., None]
    return tf.broadcast_to(mask[..., :1], tf.concat([tf.shape(like)[:-1], [1]], 0))


def mask_area(mask):
    """[B, H, W, 1] -> [B] number of masked pixels."""
    mask = tf.cast(tf.convert_to_tensor(mask), tf.float32)
    return tf.reduce_sum(mask, axis=[1, 2, 3])


def _masked_mean(values, mask):
    """values [B, H, W, C], mask [B, H, W, 1] -> [B] mean over masked pixels and channels."""
    channels = tf.cast(tf.shape(values)[-1], values.dtype)
    total = tf.reduce_sum(values * mask, axis=[1, 2, 3])
    count = tf.reduce_sum(mask, axis=[1, 2, 3]) * channels
    return tf.math.divide_no_nan(total, count)


def masked_l1(prediction, target, mask):
    """Mean absolute error over masked pixels and channels: [B, H, W, C] x2, [B, H, W, 1] -> [B]."""
    prediction = tf.convert_to_tensor(prediction, tf.float32)
    target = tf.convert_to_tensor(target, tf.float32)
    return _masked_mean(tf.abs(prediction - target), _mask(mask, prediction))


def masked_mse(prediction, target, mask):
    prediction = tf.convert_to_tensor(prediction, tf.float32)
    target = tf.convert_to_tensor(target, tf.float32)
    return _masked_mean(tf.square(prediction - target), _mask(mask, prediction))


def masked_psnr(prediction, target, mask, max_val=1.0, cap=PSNR_CAP):
    """PSNR over the mask, 10 log10(max^2 / MSE), capped at ``cap`` dB (identical images): -> [B]."""
    if tf.executing_eagerly():  # a reconstruction's few PSNRs: ~3 ms each eagerly, ~0.3 ms compiled
        return _masked_psnr_compiled(tf.convert_to_tensor(prediction, tf.float32),
                                     tf.convert_to_tensor(target, tf.float32), tf.convert_to_tensor(mask),
                                     float(max_val), float(cap))
    return _masked_psnr(prediction, target, mask, max_val, cap)


def _masked_psnr(prediction, target, mask, max_val, cap):
    mse = masked_mse(prediction, target, mask)
    psnr = 10.0 * tf.math.log(max_val ** 2 / tf.maximum(mse, 1e-30)) / tf.math.log(10.0)
    return tf.minimum(psnr, cap)


_masked_psnr_compiled = tf.function(_masked_psnr, jit_compile=True, autograph=False, reduce_retracing=True)


def _gaussian_window(size=11, sigma=1.5):
    x = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-(x ** 2) / (2 * sigma ** 2))
    g /= g.sum()
    return np.outer(g, g).astype(np.float32)


def ssim_map(prediction, target, max_val=1.0, size=11, sigma=1.5, k1=0.01, k2=0.03):
    """Per-pixel SSIM (Wang et al. 2004, Gaussian window), averaged over channels.

    Args:
      prediction, target: [B, H, W, C].
    Returns:
      [B, H - size + 1, W - size + 1, 1] ('valid' windows only, as tf.image.ssim and skimage do).
    """
    prediction = tf.convert_to_tensor(prediction, tf.float32)
    target = tf.convert_to_tensor(target, tf.float32)
    channels = prediction.shape[-1]
    window = tf.constant(_gaussian_window(size, sigma))[:, :, None, None]
    window = tf.tile(window, [1, 1, channels, 1])

    def blur(x):
        return tf.nn.depthwise_conv2d(x, window, [1, 1, 1, 1], "VALID")

    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    mu_x, mu_y = blur(prediction), blur(target)
    sigma_xx = blur(prediction * prediction) - mu_x * mu_x
    sigma_yy = blur(target * target) - mu_y * mu_y
    sigma_xy = blur(prediction * target) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sigma_xx + sigma_yy + c2))
    return tf.reduce_mean(ssim, axis=-1, keepdims=True)


def masked_ssim(prediction, target, mask, max_val=1.0, size=11):
    """Mean SSIM over window centres inside the mask: [B, H, W, C] x2, [B, H, W, 1] -> [B].

    Pixels outside the mask are composited from ``target`` first, so windows straddling the mask edge
    compare the face against the same background on both sides (docs/METHOD.md, "Evaluation").
    """
    prediction = tf.convert_to_tensor(prediction, tf.float32)
    target = tf.convert_to_tensor(target, tf.float32)
    m = _mask(mask, prediction)
    composite = prediction * m + target * (1.0 - m)
    values = ssim_map(composite, target, max_val=max_val, size=size)
    half = size // 2
    centres = m[:, half:tf.shape(m)[1] - half, half:tf.shape(m)[2] - half, :]
    return _masked_mean(values, centres)


def scale_alignment(prediction, target, mask, per_channel=True):
    """Least-squares scale s minimising ||s * prediction - target||^2 on the mask.

    Albedo from one image is only defined up to a scale (a brighter light and a darker skin explain the
    same photo), per colour channel when the light may be coloured. Returns [B, 1, 1, C] (per channel)
    or [B, 1, 1, 1].
    """
    prediction = tf.convert_to_tensor(prediction, tf.float32)
    target = tf.convert_to_tensor(target, tf.float32)
    m = _mask(mask, prediction)
    axes = [1, 2] if per_channel else [1, 2, 3]
    numerator = tf.reduce_sum(m * prediction * target, axis=axes, keepdims=True)
    denominator = tf.reduce_sum(m * prediction * prediction, axis=axes, keepdims=True)
    scale = tf.math.divide_no_nan(numerator, denominator)
    return scale if per_channel else tf.reshape(scale, [-1, 1, 1, 1])


def scale_invariant_rmse(prediction, target, mask, per_channel=True):
    """RMSE after `scale_alignment`: [B, H, W, C] x2, mask -> [B]."""
    aligned = scale_alignment(prediction, target, mask, per_channel) * tf.convert_to_tensor(prediction, tf.float32)
    return tf.sqrt(masked_mse(aligned, target, mask))


def aligned_region_rmse(prediction, target, region, align_region, per_channel=True):
    """RMSE on ``region`` after the `scale_alignment` fitted on ``align_region``: [B, H, W, C] x2, masks -> [B].

    The albedo error of one part of the chart (e.g. the texels the photo did not show) with the scale of the
    whole chart: a region's own scale would hide a tone shift there. NaN where ``region`` is empty (an error of
    nothing is not zero; the caller decides what an empty region counts as).
    """
    prediction = tf.convert_to_tensor(prediction, tf.float32)
    target = tf.convert_to_tensor(target, tf.float32)
    aligned = scale_alignment(prediction, target, align_region, per_channel) * prediction
    rmse = tf.sqrt(masked_mse(aligned, target, region))
    return tf.where(mask_area(_mask(region, prediction)) > 0, rmse, tf.constant(float("nan"), tf.float32))


def albedo_metrics(prediction_uv, target_uv, uv_mask, per_channel=True):
    """Ground-truth albedo errors in UV on the face region: dict of [B] (si-RMSE, SSIM, L1 after alignment)."""
    aligned = scale_alignment(prediction_uv, target_uv, uv_mask, per_channel) * tf.convert_to_tensor(
        prediction_uv, tf.float32)
    return {"si_rmse": tf.sqrt(masked_mse(aligned, target_uv, uv_mask)),
            "si_l1": masked_l1(aligned, target_uv, uv_mask),
            "ssim": masked_ssim(tf.clip_by_value(aligned, 0.0, 1.0), target_uv, uv_mask)}


def image_metrics(rendered, image, face_mask):
    """The paper's Table 1 pixel columns on the face mask: dict of [B] ('l1', 'psnr', 'ssim')."""
    rendered = tf.clip_by_value(tf.convert_to_tensor(rendered, tf.float32), 0.0, 1.0)
    return {"l1": masked_l1(rendered, image, face_mask),
            "psnr": masked_psnr(rendered, image, face_mask),
            "ssim": masked_ssim(rendered, image, face_mask)}


def flat_colour_rmse(target, mask):
    """RMSE of the best flat colour against ``target`` on the mask: the baseline an albedo must beat.

    A flat colour k [C] under the per-channel scale alignment of `scale_invariant_rmse` can become any constant,
    so the best one is, per channel, the mean of the target over the mask, and the error is
        sqrt( sum_c sum_t m_t (mean_c - g_tc)^2 / (C sum_t m_t) ),
    i.e. `scale_invariant_rmse` of a constant prediction (ones). An albedo whose si-RMSE is above this number
    describes the true albedo worse than no detail at all. [B, H, W, C], mask [B, H, W, 1] -> [B].
    """
    target = tf.convert_to_tensor(target, tf.float32)
    return scale_invariant_rmse(tf.ones_like(target), target, mask)
