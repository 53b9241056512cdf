"""Example images (scikit-image photos, CIFAR-10 test images), their class names, and the preprocessing each
model expects: :func:`preprocess` applies a :class:`Preprocessing`, :func:`to_display` undoes it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from xception_lib.data import DATASETS

#: scikit-image photos shown to an ImageNet model (all bundled with scikit-image, no download).
PHOTO_NAMES: tuple[str, ...] = ("chelsea", "coffee", "astronaut", "rocket")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its images: the shorter side resized to ``size`` and the centre
    cropped, then per-channel ``(image - mean) / std`` on values in [0, 1]; ``name`` for titles."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str


#: ImageNet Xception (timm and Keras weights) takes 299 px inputs scaled to [-1, 1].
IMAGENET_XCEPTION = Preprocessing(299, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "ImageNet Xception, 299 px")
#: A CIFAR-10 model takes 32 px inputs normalised as :func:`xception_lib.data.load_cifar` does.
_STATS = DATASETS["cifar10"]
CIFAR10 = Preprocessing(32, tuple(_STATS["mean"]), tuple(_STATS["std"]), "CIFAR-10, 32 px")  # type: ignore[arg-type]
_KINDS = {"imagenet": IMAGENET_XCEPTION, "cifar10": CIFAR10}
Images = np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor]  # one image, a batch or a list


def preprocessing_for(kind: str) -> Preprocessing:
    """The preprocessing of a model kind (``"imagenet"`` or ``"cifar10"``)."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {tuple(_KINDS)}, got {kind!r}")
    return _KINDS[kind]


def class_names_for(kind: str, num_classes: int | None = None) -> list[str]:
    """Class names of a model kind, checked against ``num_classes``: ``"imagenet"``'s 1000 in the usual index
    order (shipped with torchvision, offline), ``"cifar10"``'s 10."""
    from torchvision.models import Inception_V3_Weights

    imagenet = preprocessing_for(kind) is IMAGENET_XCEPTION
    names = list(Inception_V3_Weights.IMAGENET1K_V1.meta["categories"] if imagenet else CIFAR10_CLASSES)
    if num_classes is not None and num_classes != len(names):
        raise ValueError(f"expected a model with {len(names)} outputs for kind {kind!r}, got {num_classes}")
    return names


def example_images(kind: str, *, n: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` images (H x W x 3 uint8) for a model kind: :data:`PHOTO_NAMES` for ImageNet; for CIFAR-10, the first
    test images of ``n`` distinct classes in a seeded random order (the same at every build), as ``"test 1234: cat"``."""
    imagenet = preprocessing_for(kind) is IMAGENET_XCEPTION
    limit = len(PHOTO_NAMES) if imagenet else len(CIFAR10_CLASSES)
    if not 1 <= n <= limit:
        raise ValueError(f"n must be in [1, {limit}] ({'photos' if imagenet else 'one image per class'}), got {n}")
    if imagenet:
        import skimage.data

        return {name: np.ascontiguousarray(getattr(skimage.data, name)()[:, :, :3]) for name in PHOTO_NAMES[:n]}
    from xception_lib.data import load_cifar

    arrays = load_cifar("cifar10")
    labels = arrays.test_labels.numpy()
    order = np.random.default_rng(seed).permutation(len(labels))
    first = order[np.sort(np.unique(labels[order], return_index=True)[1])]  # each class's first image, in order
    return {
        f"test {i}: {arrays.classes[labels[i]]}": arrays.test_images[i].permute(1, 2, 0).numpy()
        for i in first[:n].tolist()
    }


def _as_float_batch(images: Images) -> list[torch.Tensor]:
    """Images in any of the accepted layouts -> list of 3 x H x W float tensors in [0, 1]."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("expected at least one image, got an empty list")
        return [t for image in images for t in _as_float_batch(image)]
    t = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    t = t[None] if t.dim() == 3 else t
    if t.dim() != 4 or t.shape[0] == 0 or 0 in t.shape[-2:]:
        raise ValueError(f"expected an H x W x 3 image or a non-empty batch of them, got shape {tuple(t.shape)}")
    if t.shape[-1] == 3 and t.shape[1] != 3:
        t = t.permute(0, 3, 1, 2)  # N x H x W x 3 -> N x 3 x H x W
    if t.shape[1] != 3:
        raise ValueError(f"expected 3 colour channels (RGB), got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return list(t.float() / 255.0)
    if not t.is_floating_point():
        raise TypeError(
            f"expected uint8 images (0-255) or floats in [0, 1], got {t.dtype}: convert with .to(torch.uint8)"
        )
    low, high = float(t.min()), float(t.max())  # nan compares false: caught below
    if not (0.0 <= low and high <= 1.0):
        raise ValueError(
            f"expected float images in [0, 1], got values in [{low:g}, {high:g}]: for 0-255 values "
            "pass uint8 images (or divide by 255)"
        )
    return list(t.float())


def preprocess(images: Images, spec: Preprocessing) -> torch.Tensor:
    """N x 3 x ``spec.size`` x ``spec.size`` floats: resized, centre-cropped and normalised. ``images``: one
    RGB image (H x W x 3 or 3 x H x W; uint8 in 0-255 or float in [0, 1], anything else is refused), a batch
    of them, or a list of any sizes."""
    out = []
    for image in _as_float_batch(images):
        h, w = image.shape[-2:]
        scale = spec.size / min(h, w)
        nh, nw = max(spec.size, round(h * scale)), max(spec.size, round(w * scale))
        resized = F.interpolate(image[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
        top, left = (nh - spec.size) // 2, (nw - spec.size) // 2
        out.append(resized[:, top : top + spec.size, left : left + spec.size].clamp(0.0, 1.0))
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    return (torch.stack(out) - mean) / std


def to_display(x: torch.Tensor, spec: Preprocessing) -> np.ndarray:
    """Undo :func:`preprocess` for one image (3 x H x W or 1 x 3 x H x W) -> H x W x 3 in [0, 1]."""
    x = x.detach().float().cpu()
    x = x[0] if x.dim() == 4 and x.shape[0] == 1 else x
    if x.dim() != 3 or x.shape[0] != 3 or x.numel() == 0:
        raise ValueError(f"expected one RGB image (3 x H x W or 1 x 3 x H x W), got shape {tuple(x.shape)}")
    x = x * torch.tensor(spec.std).view(3, 1, 1) + torch.tensor(spec.mean).view(3, 1, 1)
    return x.clamp(0.0, 1.0).permute(1, 2, 0).numpy()
