"""Weighted (missing-data) PCA in UV space and coefficient fitting (step 4 of `tf_facetex.albedo_model`)."""
import dataclasses

import numpy as np


@dataclasses.dataclass
class PCAResult:
    """A linear model x ~ mean + coefficients @ components, components orthonormal, sorted by variance."""

    mean: np.ndarray             # [D]
    components: np.ndarray       # [K, D] orthonormal rows
    stds: np.ndarray             # [K] standard deviation of each coefficient over the data
    coefficients: np.ndarray     # [M, K] of the data (not scaled by stds)
    noise_variance: float        # weighted mean squared residual per entry
    history: list                # weighted mean squared residual per iteration
    data_variance: float         # weighted mean squared deviation from the mean per entry

    @property
    def explained_fraction(self) -> float:
        """Share of the data's (weighted) variance about the mean that the K components explain."""
        return 1.0 - self.noise_variance / max(self.data_variance, 1e-30)


def _solve_batched(matrices, rhs):
    """[B, P, P], [B, P] -> [B, P] (symmetric positive definite systems)."""
    return np.linalg.solve(matrices, rhs[..., None])[..., 0]


def _orthonormalize(mean, components, coefficients):
    """Re-parameterises the same reconstruction with centred coefficients and orthonormal components sorted by
    the variance of their coefficients. Returns (mean, components, coefficients, stds)."""
    centre = coefficients.mean(axis=0)
    mean = mean + centre @ components
    coefficients = coefficients - centre
    q, r = np.linalg.qr(components.T)                             # components = (q r)^T
    u, s, vt = np.linalg.svd(coefficients @ r.T, full_matrices=False)
    components = (q @ vt.T).T
    coefficients = u * s
    count = max(coefficients.shape[0] - 1, 1)
    return mean, components, coefficients, s / np.sqrt(count)


def weighted_pca(data, weights, num_components: int, iterations: int = 60, ridge: float = 1e-2,
                 tolerance: float = 1e-4, initial_components=None, progress=None) -> PCAResult:
    """Mean and principal components of data with per-entry weights (0 = missing), by alternating weighted
    least squares (weighted low-rank approximation):

        minimise  sum_md w_md (x_md - mean_d - sum_k c_mk v_kd)^2 + lambda_c |c|^2 + lambda_v |v|^2

    alternating the per-photo coefficients c_m (K x K systems) and the per-feature (mean_d, v_d) ((K+1) x (K+1)
    systems), each in closed form, starting from PCA of the mean-filled data (or ``initial_components``). Unlike
    PCA on filled data, an entry missing in a photo neither counts as the mean nor shrinks the variance. The ridges
    are ``ridge`` x the mean over photos (features) of the systems' diagonals, the same for all photos (features):
    photos (features) with few data are pulled towards 0 (no variation), well-observed ones shrink by about
    ``ridge``. The mean is free. The big products run in float32, the small systems in float64.

    Args:
      data: [M, D]; weights: [M, D] >= 0 (same shape; entries with weight 0 may hold anything finite).
      num_components: K (<= min(M - 1, D)).
      iterations: maximum alternations; stops early when the weighted residual improves by less than
        ``tolerance`` (relative) in one alternation.
      initial_components: [K, D] to start from (e.g. a previous build's), or None.
      progress: optional callable(iteration, residual).
    Returns:
      `PCAResult`. Features nobody observed get mean 0 and zero components.
    """
    x = np.asarray(data, np.float32)
    w = np.asarray(weights, np.float32)
    if x.shape != w.shape or x.ndim != 2:
        raise ValueError(f"data {x.shape} and weights {w.shape} must be the same [M, D]")
    m, d = x.shape
    k = int(num_components)
    if not 0 < k <= min(m - 1, d):
        raise ValueError(f"num_components must be in [1, {min(m - 1, d)}] for {m} samples of {d} features")
    x = np.where(w > 0, x, np.float32(0.0))
    wx = w * x
    feature_weight = w.sum(axis=0, dtype=np.float64)
    observed = feature_weight > 0
    mean = np.where(observed, wx.sum(0, dtype=np.float64) / np.maximum(feature_weight, 1e-12), 0.0)
    if initial_components is None:
        filled = np.where(w > 0, x - mean.astype(np.float32), np.float32(0.0))
        # Top eigenvectors of the [M, M] Gram matrix: the same as an SVD of the filled data, faster when M < D.
        _, vectors = np.linalg.eigh((filled @ filled.T).astype(np.float64))
        components = vectors[:, ::-1][:, :k].T @ filled
        del filled
    else:
        components = np.asarray(initial_components, np.float64)
    components = np.linalg.qr(components.T)[0].T
    history = []
    eye_k = np.eye(k)
    for iteration in range(iterations):
        # Coefficients: (V W_m V^T + lambda_c) c_m = V W_m (x_m - mean).
        outer = (components[:, None, :] * components[None, :, :]).reshape(k * k, d).astype(np.float32)
        gram = (w @ outer.T).astype(np.float64).reshape(m, k, k)
        scale = np.mean(np.trace(gram, axis1=1, axis2=2)) / k
        rhs = (wx @ components.T.astype(np.float32)).astype(np.float64) - (w @ (components * mean).T.astype(
            np.float32)).astype(np.float64)
        coefficients = _solve_batched(gram + (ridge * scale + 1e-12) * eye_k, rhs)
        # Mean and components per feature: design [1, c_m].
        design = np.concatenate([np.ones((m, 1)), coefficients], axis=1)                       # [M, K+1]
        outer = (design[:, :, None] * design[:, None, :]).reshape(m, (k + 1) ** 2).astype(np.float32)
        normal = (w.T @ outer).astype(np.float64).reshape(d, k + 1, k + 1)
        # Per component, so that small components are not shrunk more than large ones.
        scale = np.mean(np.diagonal(normal, axis1=1, axis2=2), axis=0) + 1e-12                 # [K+1]
        penalty = np.diag(np.concatenate([[1e-9 * scale[0]], ridge * scale[1:]]))             # the mean is free
        solution = _solve_batched(normal + penalty, (wx.T @ design.astype(np.float32)).astype(np.float64))
        mean = np.where(observed, solution[:, 0], 0.0)
        components = np.where(observed[None], solution[:, 1:].T, 0.0)
        mean, components, coefficients, _ = _orthonormalize(mean, components, coefficients)
        residual = x - (mean + coefficients @ components).astype(np.float32)
        history.append(float(np.sum(w * residual * residual, dtype=np.float64) / max(feature_weight.sum(), 1e-12)))
        del residual
        if progress is not None:
            progress(iteration, history[-1])
        if len(history) > 1 and history[-2] - history[-1] <= tolerance * history[-2]:
            break
    mean, components, coefficients, stds = _orthonormalize(mean, components, coefficients)
    centred = np.where(w > 0, x - mean.astype(np.float32), np.float32(0.0))
    data_variance = float(np.sum(w * centred * centred, dtype=np.float64) / max(feature_weight.sum(), 1e-12))
    return PCAResult(mean=mean, components=components, coefficients=coefficients, stds=stds,
                     noise_variance=history[-1] if history else data_variance, history=history,
                     data_variance=data_variance)


def fit_coefficients(data, weights, mean, basis, noise_variance: float):
    """MAP coefficients of samples under a linear model with N(0, 1) coefficients and isotropic noise.

    Args:
      data, weights: [M, D]; mean: [D]; basis: [K, D] components scaled by their stds.
      noise_variance: per-feature noise variance (the prior's weight against the data).
    Returns:
      [M, K].
    """
    x = np.asarray(data, np.float64)
    w = np.asarray(weights, np.float64)
    basis = np.asarray(basis, np.float64)
    k = basis.shape[0]
    if k == 0:
        return np.zeros((x.shape[0], 0))
    outer = (basis[:, None, :] * basis[None, :, :]).reshape(k * k, -1)
    gram = (w @ outer.T).reshape(-1, k, k) + noise_variance * np.eye(k)
    rhs = (w * np.where(w > 0, x - mean, 0.0)) @ basis.T
    return _solve_batched(gram, rhs)


def subspace_angles_degrees(a, b):
    """Principal angles between the row spaces of a [K1, D] and b [K2, D], in degrees, smallest first."""
    from scipy.linalg import subspace_angles
    return np.sort(np.degrees(subspace_angles(np.asarray(a, np.float64).T, np.asarray(b, np.float64).T)))
