"""Example images and the preprocessing each model expects.

Two models are visualised in this book, and each was trained on differently prepared images:

* the ImageNet Xception (timm's ``legacy_xception``, a port of the Keras weights) sees
  299 x 299 RGB images scaled to [-1, 1], that is ``mean = std = (0.5, 0.5, 0.5)``;
* the CIFAR-10 model (:func:`xception_lib.xception_cifar`) sees 32 x 32 images normalised
  with the per-channel mean and standard deviation of the CIFAR-10 training set.

A :class:`Preprocessing` records one of these recipes; :func:`preprocess` applies it and
:func:`to_display` undoes it for plotting. The real photos come bundled with scikit-image
(no download); CIFAR-10 test images come from :func:`xception_lib.data.load_cifar`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: scikit-image photos used in the book (all bundled with scikit-image, no download).
PHOTO_NAMES: tuple[str, ...] = ("chelsea", "coffee", "astronaut")

#: Per-channel mean and standard deviation of the CIFAR-10 training images (RGB, in [0, 1]).
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input images.

    Attributes:
        size: Height and width of the square input (the shorter side is resized to it,
            then the centre is cropped).
        mean: Per-channel mean subtracted from images in [0, 1].
        std: Per-channel standard deviation the result is divided by.
        name: What the recipe is for, for figure titles.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str


#: ImageNet Xception (timm and Keras weights) takes 299 px inputs scaled to [-1, 1].
IMAGENET_XCEPTION = Preprocessing(299, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "ImageNet Xception, 299 px")

#: The CIFAR-10 model takes 32 px inputs normalised with the CIFAR-10 mean and standard deviation.
CIFAR10 = Preprocessing(32, CIFAR10_MEAN, CIFAR10_STD, "CIFAR-10, 32 px")


def cifar10_preprocessing() -> Preprocessing:
    """The CIFAR-10 recipe, with the statistics :mod:`xception_lib.data` normalises with."""
    try:
        from xception_lib.data import DATASETS
    except ImportError:
        return CIFAR10
    stats = DATASETS.get("cifar10", {})
    mean, std = stats.get("mean"), stats.get("std")
    if mean is None or std is None:
        return CIFAR10
    return Preprocessing(32, tuple(float(m) for m in mean), tuple(float(s) for s in std), CIFAR10.name)  # type: ignore[arg-type]


def preprocessing_for(kind: str) -> Preprocessing:
    """The preprocessing of a model kind returned by :func:`xception_lib.chapters.viz.load_best_available_model`.

    Args:
        kind: ``"imagenet"`` or ``"random"`` (the ImageNet architecture), or ``"cifar10"``.
    """
    if kind in ("imagenet", "random"):
        return IMAGENET_XCEPTION
    if kind == "cifar10":
        return cifar10_preprocessing()
    raise ValueError(f"kind must be one of ('imagenet', 'random', 'cifar10'), got {kind!r}")


def photo(name: str) -> np.ndarray:
    """A photo bundled with scikit-image, as an H x W x 3 uint8 array.

    Args:
        name: A scikit-image data function returning an RGB image, e.g. ``"chelsea"`` (a cat),
            ``"coffee"`` (a cup of coffee), ``"astronaut"`` (Eileen Collins), ``"rocket"``.
    """
    import skimage.data

    loader = getattr(skimage.data, name, None)
    if loader is None or not callable(loader):
        raise ValueError(f"expected the name of a scikit-image photo such as {PHOTO_NAMES}, got {name!r}")
    image = np.asarray(loader())
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"expected an RGB photo (H x W x 3), but skimage.data.{name}() has shape {image.shape}")
    return np.ascontiguousarray(image[:, :, :3])


def photos(names: Sequence[str] = PHOTO_NAMES) -> dict[str, np.ndarray]:
    """Several scikit-image photos, by name (see :func:`photo`)."""
    return {name: photo(name) for name in names}


def cifar_test_images(n: int = 8, *, seed: int = 0, root: str | None = None) -> dict[str, np.ndarray]:
    """``n`` random CIFAR-10 test images, keyed ``"test image <index> (<class>)"``, each 32 x 32 x 3 uint8.

    Args:
        n: How many images.
        seed: Seed of the random choice, so a chapter shows the same images every build.
        root: Where the data is (passed to :func:`xception_lib.data.load_cifar`; default:
            its own lookup, e.g. the ``XCEPTION_DATA`` environment variable).
    """
    from xception_lib import data

    arrays = data.load_cifar("cifar10") if root is None else data.load_cifar("cifar10", root=root)
    images = np.asarray(arrays.test_images)  # N x 3 x 32 x 32 uint8
    labels = np.asarray(arrays.test_labels)
    if n < 1 or n > len(images):
        raise ValueError(f"n must be in [1, {len(images)}], got {n}")
    chosen = np.random.default_rng(seed).choice(len(images), size=n, replace=False)
    return {f"test image {i} ({arrays.classes[int(labels[i])]})": images[i].transpose(1, 2, 0) for i in chosen}


def example_images(kind: str, *, n: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """Images suited to a model kind: the photos for ImageNet models, CIFAR-10 test images otherwise.

    Args:
        kind: ``"imagenet"``, ``"random"`` or ``"cifar10"``.
        n: How many images.
        seed: Seed for choosing CIFAR-10 images.
    """
    if kind in ("imagenet", "random"):
        names = PHOTO_NAMES if n <= len(PHOTO_NAMES) else (*PHOTO_NAMES, "rocket", "cat")
        if n > len(names):
            raise ValueError(f"n must be at most {len(names)} for photos, got {n}")
        return photos(names[:n])
    if kind == "cifar10":
        return cifar_test_images(n, seed=seed)
    raise ValueError(f"kind must be one of ('imagenet', 'random', 'cifar10'), got {kind!r}")


def _as_float_batch(images: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> list[torch.Tensor]:
    """Images in any of the accepted layouts -> list of 3 x H x W float tensors in [0, 1]."""
    if isinstance(images, (list, tuple)):
        out: list[torch.Tensor] = []
        for image in images:
            out += _as_float_batch(image)
        return out
    t = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if t.dim() == 3:
        t = t[None]
    if t.dim() != 4:
        raise ValueError(f"expected an H x W x 3 image or a batch of them, got shape {tuple(t.shape)}")
    if t.shape[-1] == 3 and t.shape[1] != 3:
        t = t.permute(0, 3, 1, 2)  # N x H x W x 3 -> N x 3 x H x W
    if t.shape[1] != 3:
        raise ValueError(f"expected 3 colour channels (RGB), got shape {tuple(t.shape)}")
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    return list(t)


def preprocess(
    images: np.ndarray | torch.Tensor | Sequence[np.ndarray],
    spec: Preprocessing,
    *,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Resize, centre-crop and normalise images for a model.

    Args:
        images: One RGB image (H x W x 3 or 3 x H x W; uint8 in [0, 255] or float in
            [0, 1]), a batch of them (N x H x W x 3 or N x 3 x H x W), or a list of images
            of different sizes.
        spec: The model's :class:`Preprocessing`.
        device: Where the returned tensor lives.

    Returns:
        A float tensor N x 3 x ``spec.size`` x ``spec.size``.
    """
    out = []
    for image in _as_float_batch(images):
        h, w = image.shape[-2:]
        scale = spec.size / min(h, w)
        nh, nw = max(spec.size, round(h * scale)), max(spec.size, round(w * scale))
        resized = F.interpolate(image[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
        top, left = (nh - spec.size) // 2, (nw - spec.size) // 2
        out.append(resized[:, top : top + spec.size, left : left + spec.size].clamp(0.0, 1.0))
    batch = torch.stack(out)  # N x 3 x size x size, in [0, 1]
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return ((batch - mean) / std).to(device)


def to_display(x: torch.Tensor, spec: Preprocessing | None = None) -> np.ndarray:
    """Undo :func:`preprocess` for one image: 3 x H x W (or 1 x 3 x H x W) -> H x W x 3 in [0, 1].

    Args:
        x: A preprocessed image.
        spec: Its preprocessing; ``None`` rescales the image's own range to [0, 1].
    """
    x = x.detach().float().cpu()
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected one image (3 x H x W or 1 x 3 x H x W), got shape {tuple(x.shape)}")
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"expected one RGB image 3 x H x W, got shape {tuple(x.shape)}")
    if spec is None:
        x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
    else:
        x = x * torch.tensor(spec.std).view(3, 1, 1) + torch.tensor(spec.mean).view(3, 1, 1)
    return x.clamp(0.0, 1.0).permute(1, 2, 0).numpy()


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in the usual index order (shipped with torchvision, offline)."""
    from torchvision.models import Inception_V3_Weights

    return list(Inception_V3_Weights.IMAGENET1K_V1.meta["categories"])
