"""Polar transform of a square satellite tile into a ground-like pseudo-panorama (conventions §3).

For output row i in [0, H) and column j in [0, W), with ``r = (S/2) * (H - 1 - i) / H``:
``y = S/2 + r cos(2 pi j / W)``, ``x = S/2 - r sin(2 pi j / W)``; bilinear interpolation, samples
outside the image are 0, the centre is exactly S/2. Column W/2 looks north and azimuth grows
clockwise, so the polar image lines up column for column with its north-aligned panorama.

The sampling grid (four tap indices and weights per output pixel) depends only on (S, H, W) and is
cached, so a transform is a vectorised gather, exact to floating point (no fixed-point remap tables).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=16)
def polar_grid(size: int, height: int = 128, width: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Source (y, x) coordinates, each H x W float64, of the conventions §3 polar transform of an S x S image."""
    i = np.arange(height, dtype=np.float64)[:, None]
    j = np.arange(width, dtype=np.float64)[None, :]
    r = (size / 2.0) * (height - 1 - i) / height
    theta = 2.0 * np.pi * j / width
    y = size / 2.0 + r * np.cos(theta)
    x = size / 2.0 - r * np.sin(theta)
    y.setflags(write=False)
    x.setflags(write=False)
    return y, x


@lru_cache(maxsize=16)
def _bilinear_taps(size: int, height: int, width: int):
    """Flat indices into the zero-padded (S+1) x (S+1) image and the four bilinear weights."""
    y, x = polar_grid(size, height, width)
    y0 = np.floor(y).astype(np.int64)
    x0 = np.floor(x).astype(np.int64)
    fy = y - y0
    fx = x - x0
    # Pad by one row/column of zeros at the far side: every tap then lies in [0, S] (y, x >= 0 by
    # construction since r < S/2) and taps at S read the padding, i.e. "outside the image is 0".
    if y0.min() < 0 or x0.min() < 0 or y0.max() + 1 > size or x0.max() + 1 > size:
        raise AssertionError("polar grid left the padded image; r must stay below S/2")
    stride = size + 1
    idx = np.stack([y0 * stride + x0, y0 * stride + x0 + 1, (y0 + 1) * stride + x0, (y0 + 1) * stride + x0 + 1])
    w = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx])
    idx.setflags(write=False)
    w.setflags(write=False)
    return idx, w


def polar_transform(image: np.ndarray, height: int = 128, width: int = 512) -> np.ndarray:
    """Polar-transform a square satellite image (S x S or S x S x C, uint8 or float) to H x W (x C).

    The output has the input's dtype (uint8 is rounded and clipped) and channel layout.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] != image.shape[1]:
        raise ValueError(
            f"polar_transform needs a square S x S or S x S x C image, got shape {image.shape}; "
            "crop or resize the satellite tile to a square first"
        )
    if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"polar_transform accepts uint8 or floating-point images, got {image.dtype}")
    size = image.shape[0]
    squeeze = image.ndim == 2
    img = image[:, :, None] if squeeze else image
    channels = img.shape[2]
    work = np.float64 if image.dtype == np.float64 else np.float32
    # uint8 tiles are gathered as bytes and converted per tap: the same float32 products in the same order as
    # converting the whole tile first, but reading a quarter of the bytes (the synthetic world and the database build
    # polar-transform every tile)
    padded = np.zeros((size + 1, size + 1, channels), dtype=np.uint8 if image.dtype == np.uint8 else work)
    padded[:size, :size] = img
    flat = padded.reshape(-1, channels)
    idx, w = _bilinear_taps(size, height, width)
    out = np.zeros((height, width, channels), dtype=work)
    for t in range(4):
        out += np.take(flat, idx[t], axis=0).astype(work, copy=False) * w[t][:, :, None].astype(work)
    if image.dtype == np.uint8:
        out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    else:
        out = out.astype(image.dtype, copy=False)
    return out[:, :, 0] if squeeze else out
