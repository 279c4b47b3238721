"""Array <-> tensor conversion and resizing shared by both branches (ground and satellite).

Both branches use the same ImageNet normalisation, because both ResNet18 branches start from ImageNet
weights. Resizing uses ``cv2.INTER_AREA`` when shrinking (it averages the source pixels, so it does not
alias) and ``cv2.INTER_LINEAR`` when enlarging (``INTER_AREA`` degenerates to nearest-neighbour there).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _as_size(size) -> tuple[int, int]:
    height, width = (int(v) for v in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"target size must be positive (height, width), got {tuple(size)}")
    return height, width


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an H x W (x C) image to ``size = (height, width)``.

    Each axis gets the interpolation suited to its own direction: when one axis shrinks and the other
    grows, the image is resized in two passes (width, then height) so the shrinking axis is still
    area-averaged. Returns the input itself when it already has the requested size.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"resize_image needs a non-empty H x W or H x W x C image, got shape {image.shape}")
    height, width = _as_size(size)
    src_height, src_width = image.shape[:2]
    if (src_height, src_width) == (height, width):
        return image
    shrink_h, shrink_w = height <= src_height, width <= src_width
    if shrink_h == shrink_w:
        interpolation = cv2.INTER_AREA if shrink_h else cv2.INTER_LINEAR
        return _cv2_resize(image, height, width, interpolation)
    # Mixed directions: one axis at a time (both filters are separable, so this is the same filter).
    horizontal = _cv2_resize(image, src_height, width, cv2.INTER_AREA if shrink_w else cv2.INTER_LINEAR)
    return _cv2_resize(horizontal, height, width, cv2.INTER_AREA if shrink_h else cv2.INTER_LINEAR)


def _cv2_resize(image: np.ndarray, height: int, width: int, interpolation: int) -> np.ndarray:
    out = cv2.resize(image, (width, height), interpolation=interpolation)
    if image.ndim == 3 and out.ndim == 2:  # cv2 drops a trailing channel axis of size 1
        out = out[:, :, None]
    return out


def resize_to_height(image: np.ndarray, height: int) -> np.ndarray:
    """Resize to ``height`` rows keeping the aspect ratio (width rounded to the nearest pixel, at least 1)."""
    src_height, src_width = np.asarray(image).shape[:2]
    width = max(1, int(round(src_width * height / src_height)))
    return resize_image(image, (height, width))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 RGB image -> float32 3 x H x W tensor, scaled to [0, 1] then ImageNet-normalised."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"to_tensor needs a uint8 H x W x 3 RGB image, got {image.dtype} with shape {image.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return tensor.sub_(mean).div_(std)


def denormalize(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_tensor` for display: 3 x H x W -> uint8 H x W x 3 (N x 3 x H x W -> N x H x W x 3)."""
    tensor = torch.as_tensor(tensor).detach().to("cpu", torch.float32)
    if tensor.ndim not in (3, 4) or tensor.shape[-3] != 3:
        raise ValueError(f"denormalize needs a 3 x H x W or N x 3 x H x W tensor, got shape {tuple(tensor.shape)}")
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    image = (tensor * std + mean).mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return image.movedim(-3, -1).numpy()
