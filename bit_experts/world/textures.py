"""Procedural two-colour textures: the downstream task that resembles no glyph expert's domain."""

from __future__ import annotations

import numpy as np

from bit_experts.world import render

TEXTURE_CLASSES = (
    "horizontal_stripes",
    "vertical_stripes",
    "diagonal_stripes",
    "antidiagonal_stripes",
    "checkerboard",
    "dots",
    "rings",
    "pinwheel",
)
# Direction of change of each stripe class in degrees (horizontal bands vary along y).
_STRIPE_DEGREES = {
    "horizontal_stripes": 90.0,
    "vertical_stripes": 0.0,
    "diagonal_stripes": 45.0,
    "antidiagonal_stripes": 135.0,
}
_JITTER_DEGREES = 10.0  # Well under the 45 degrees between stripe classes.


def _mix(kind: str, p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The [n, S, S] blend weight between the two colours for n textures of one kind."""
    u = x * np.cos(p["theta"]) + y * np.sin(p["theta"])  # Along the texture's rotated axes.
    v = y * np.cos(p["theta"]) - x * np.sin(p["theta"])
    wave_u = np.sin(2 * np.pi * p["cycles"] * u + p["phase_u"])
    wave_v = np.sin(2 * np.pi * p["cycles"] * v + p["phase_v"])
    if kind == "checkerboard":
        return 0.5 + 0.5 * np.tanh(4 * wave_u * wave_v)
    if kind == "dots":
        return np.clip(3 * (wave_u + wave_v - 1), 0, 1)
    dx, dy = x - p["centre_x"], y - p["centre_y"]
    if kind == "rings":
        return 0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * p["cycles"] * np.hypot(dx, dy) + p["phase_u"])
    if kind == "pinwheel":
        return 0.5 + 0.5 * np.sin(p["arms"] * np.arctan2(dy, dx) + p["phase_u"])
    return 0.5 + 0.5 * wave_u  # Stripes.


def render_textures(
    rng: np.random.Generator,
    labels: np.ndarray,
    image_size: int,
    jitter_degrees: float = _JITTER_DEGREES,
    contrast: float = 1.0,
    noise: float = 0.03,
) -> np.ndarray:
    """One random texture of class `TEXTURE_CLASSES[label]` per label: uint8 [n, S, S, 3].

    Frequency, phase, small rotation, centre and the two colours (one light, one dark) are random.
    Difficulty knobs (the defaults give the "textures" task): `jitter_degrees`, the largest random
    turn (22.5 makes neighbouring stripe directions touch); `contrast`, how far the second colour
    lies from the first (1.0: as drawn, 0.3: 30% of the way); `noise`, per-pixel Gaussian sigma.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if n and (labels.min() < 0 or labels.max() >= len(TEXTURE_CLASSES)):
        raise ValueError(f"texture labels must be in [0, {len(TEXTURE_CLASSES)}), got {labels!r}")
    base = np.array([_STRIPE_DEGREES.get(name, 0.0) for name in TEXTURE_CLASSES])[labels]
    params = {
        "theta": np.deg2rad(base + rng.uniform(-jitter_degrees, jitter_degrees, n)),
        "cycles": rng.uniform(2.5, 5.0, n),
        "phase_u": rng.uniform(0, 2 * np.pi, n),
        "phase_v": rng.uniform(0, 2 * np.pi, n),
        "centre_x": rng.uniform(-0.3, 0.3, n),
        "centre_y": rng.uniform(-0.3, 0.3, n),
        "arms": rng.integers(3, 7, n),
    }
    params = {k: v[:, None, None].astype(np.float32) for k, v in params.items()}
    light = rng.random(n) < 0.5
    colour_a = render.random_colours(rng, np.where(light, 0.6, 0.05), np.where(light, 0.95, 0.4))
    colour_b = render.random_colours(rng, np.where(light, 0.0, 0.7), np.where(light, 0.3, 1.0))
    if contrast != 1.0:  # Skipped at 1.0 so the default keeps its exact pixels.
        colour_b = (colour_a + contrast * (colour_b - colour_a)).astype(np.float32)

    grid = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size - 0.5
    x, y = grid[None, None, :], grid[None, :, None]
    out = np.empty((n, image_size, image_size, 3), np.uint8)
    step = max(1, render.CHUNK_PIXELS // (image_size * image_size))  # Bounded memory.
    for start in range(0, n, step):
        rows = np.arange(start, min(start + step, n))
        mix = np.empty((len(rows), image_size, image_size), np.float32)
        for label in np.unique(labels[rows]):
            same = labels[rows] == label
            chosen = {k: v[rows[same]] for k, v in params.items()}
            mix[same] = _mix(TEXTURE_CLASSES[label], chosen, x, y)
        a, b = colour_a[rows, None, None, :], colour_b[rows, None, None, :]
        image = a + (b - a) * mix[..., None]
        image += noise * rng.standard_normal(image.shape, dtype=np.float32)
        out[rows] = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return out
