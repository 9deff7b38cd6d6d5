"""A tiny procedural face model (a bumped height field) for fast unit tests only.

It has the same fields and conventions as the real models (decimetres, +z forward, 68 landmarks, a
symmetric UV layout, an albedo basis) but only ~1k vertices, so tests run in milliseconds. It is never
used as a fallback for a real face model.
"""
import numpy as np

from tf_facetex.face_model.model import MorphableModel


def _landmark_template() -> np.ndarray:
    """[68, 2] Multi-PIE-ordered landmark positions on the unit face grid (s right, t up)."""
    points = []
    for phi in np.linspace(np.pi, 2 * np.pi, 17):                     # 0-16 jaw, subject's right first
        points.append((0.9 * np.cos(phi), 0.2 - 1.1 * (-np.sin(phi)) ** 4))
    for x in np.linspace(-0.75, -0.15, 5):                            # 17-21 right brow
        points.append((x, 0.45 + 0.08 * np.cos((x + 0.45) * 4)))
    for x in np.linspace(0.15, 0.75, 5):                              # 22-26 left brow
        points.append((x, 0.45 + 0.08 * np.cos((x - 0.45) * 4)))
    for y in np.linspace(0.35, -0.1, 4):                              # 27-30 nose bridge, 30 = tip
        points.append((0.0, y))
    for x in np.linspace(-0.2, 0.2, 5):                               # 31-35 nostrils
        points.append((x, -0.2 + 0.05 * (1 - abs(x) / 0.2)))

    def eye(cx, angles):
        return [(cx + 0.15 * np.cos(a), 0.25 + 0.06 * np.sin(a)) for a in angles]

    points += eye(-0.4, np.radians([180, 120, 60, 0, -60, -120]))    # 36-41 right eye, outer corner first
    points += eye(0.4, np.radians([180, 120, 60, 0, -60, -120]))     # 42-47 left eye, inner corner first
    outer = np.radians([180, 150, 120, 90, 60, 30, 0, -30, -60, -90, -120, -150])
    points += [(0.35 * np.cos(a), -0.5 + 0.15 * np.sin(a)) for a in outer]      # 48-59 outer lips
    inner = np.radians([180, 135, 90, 45, 0, -45, -90, -135])
    points += [(0.25 * np.cos(a), -0.5 + 0.05 * np.sin(a)) for a in inner]      # 60-67 inner lips
    return np.array(points, np.float64)


def make_procedural_model(grid: int = 33, seed: int = 0) -> MorphableModel:
    """Builds the test model on a ``grid`` x ``grid`` lattice (odd, so x = 0 is a vertex column)."""
    if grid % 2 == 0 or grid < 9:
        raise ValueError("grid must be odd and >= 9")
    rng = np.random.default_rng(seed)
    t, s = np.meshgrid(np.linspace(-1, 1, grid), np.linspace(-1, 1, grid), indexing="ij")
    s, t = s.reshape(-1), t.reshape(-1)          # row i varies t (up), column j varies s (right)

    def height(s_, t_):
        dome = 0.45 * np.sqrt(np.clip(1.0 - 0.55 * s_ ** 2 - 0.35 * t_ ** 2, 0.05, None))
        nose = 0.22 * np.exp(-(s_ ** 2) / 0.015 - ((t_ + 0.1) ** 2) / 0.06)
        return dome + nose

    mean_shape = np.stack([0.75 * s, 0.95 * t, height(s, t)], axis=1)
    mean_shape -= mean_shape.mean(axis=0)

    # Quads (i, j) -> two counter-clockwise triangles seen from +z.
    index = np.arange(grid * grid).reshape(grid, grid)
    a, b = index[:-1, :-1].reshape(-1), index[:-1, 1:].reshape(-1)
    c, d = index[1:, 1:].reshape(-1), index[1:, :-1].reshape(-1)
    triangles = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]).astype(np.int32)
    uv = np.stack([0.02 + 0.96 * (s + 1) / 2, 0.02 + 0.96 * (t + 1) / 2], axis=1)

    # Identity: smooth, mostly symmetric deformations; expression: local ones; all in decimetres.
    x, y = s, t
    zero = np.zeros_like(x)
    id_modes = [
        np.stack([0.04 * x, zero, zero], 1),                                       # face width
        np.stack([zero, 0.05 * y, zero], 1),                                       # face height
        np.stack([zero, zero, 0.06 * np.exp(-x ** 2 / 0.02 - (y + 0.1) ** 2 / 0.06)], 1),   # nose depth
        np.stack([zero, -0.04 * np.clip(-y, 0, None) ** 2, zero], 1),              # chin length
        np.stack([zero, zero, 0.02 * x * y], 1),                                   # asymmetric twist
        np.stack([zero, zero, 0.03 * (1 - x ** 2)], 1),                            # face depth
    ]
    mouth = np.exp(-(x ** 2) / 0.15 - (y + 0.5) ** 2 / 0.03)
    exp_modes = [
        np.stack([zero, -0.05 * mouth * (y < -0.5), zero], 1),                     # jaw open
        np.stack([0.03 * mouth * np.sign(x), 0.02 * mouth * np.abs(x) / 0.35, zero], 1),  # smile
        np.stack([zero, 0.02 * np.exp(-(y - 0.45) ** 2 / 0.01), zero], 1),         # brows up
    ]

    skin = np.array([0.72, 0.55, 0.47])
    lips = np.exp(-(x ** 2) / 0.12 - (y + 0.5) ** 2 / 0.02)[:, None]
    brows = np.exp(-(np.abs(x) - 0.45) ** 2 / 0.06 - (y - 0.45) ** 2 / 0.004)[:, None]
    albedo_mean = skin * (1 - lips) + np.array([0.65, 0.35, 0.35]) * lips
    albedo_mean = albedo_mean * (1 - brows) + np.array([0.25, 0.18, 0.14]) * brows
    tex_modes = [
        np.tile([0.08, 0.07, 0.06], (x.size, 1)),                                 # brightness
        np.tile([0.05, -0.01, -0.02], (x.size, 1)),                               # redness
        0.04 * lips * np.array([1.0, 0.2, 0.2]),                                  # lip colour
        0.03 * (y[:, None] * np.array([1.0, 0.9, 0.8])),                          # vertical gradient
        0.01 * rng.standard_normal((x.size, 3)),                                   # blotches
    ]

    template = _landmark_template()
    grid_st = np.stack([s, t], 1)
    landmarks = np.argmin(((template[:, None, :] - grid_st[None]) ** 2).sum(-1), axis=1)
    mirror = index[:, ::-1].reshape(-1)
    region = (s ** 2 / 0.9 + (t - 0.05) ** 2 / 1.0) < 1.0
    skin_mask = region & (np.abs(t - 0.25) > 0.12) & (np.abs(t + 0.5) > 0.15)
    return MorphableModel(
        name="procedural",
        mean_shape=mean_shape,
        id_basis=np.stack(id_modes),
        exp_basis=np.stack(exp_modes),
        albedo_mean=albedo_mean,
        albedo_basis=np.stack(tex_modes),
        triangles=triangles,
        uv_coords=uv,
        uv_triangles=triangles.copy(),
        textured_triangles=np.ones(len(triangles), bool),
        landmark_indices=landmarks,
        symmetry_indices=mirror,
        face_region_mask=region,
        skin_mask=skin_mask,
        exp_names=("jawOpen", "mouthSmile", "browUp"),
        albedo_source="model",
        source=f"procedural(grid={grid}, seed={seed})",
    )
