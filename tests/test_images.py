"""Example images and per-model preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xception_lib.chapters import images as im


def test_photos_are_rgb_uint8() -> None:
    photos = im.example_images("imagenet", n=len(im.PHOTO_NAMES))
    assert list(photos) == list(im.PHOTO_NAMES)
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 for p in photos.values())
    with pytest.raises(ValueError, match=r"n must be in \[1, 4\] \(photos\)"):
        im.example_images("imagenet", n=5)


def test_preprocess_resizes_photos_of_different_sizes_to_the_model_size() -> None:
    photos = im.example_images("imagenet", n=2)  # chelsea and coffee: 300 x 451 and 400 x 600
    x = im.preprocess(list(photos.values()), im.IMAGENET_XCEPTION)
    assert x.shape == (2, 3, 299, 299)
    assert x.dtype == torch.float32
    # mean = std = 0.5 maps [0, 1] to [-1, 1].
    assert -1.0 <= float(x.min()) < -0.5 and 0.5 < float(x.max()) <= 1.0


def test_preprocess_normalises_with_the_spec_and_to_display_undoes_it() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    x = im.preprocess(image, im.CIFAR10)  # already 32 px: no resampling
    expected = (
        torch.from_numpy(image).permute(2, 0, 1).float() / 255 - torch.tensor(im.CIFAR10.mean).view(3, 1, 1)
    ) / torch.tensor(im.CIFAR10.std).view(3, 1, 1)
    torch.testing.assert_close(x[0], expected)
    np.testing.assert_allclose(im.to_display(x[0], im.CIFAR10), image / 255.0, atol=1e-5)


def test_preprocess_accepts_the_cifar_channel_first_layout() -> None:
    batch = np.zeros((5, 3, 32, 32), dtype=np.uint8)
    x = im.preprocess(batch, im.IMAGENET_XCEPTION)
    assert x.shape == (5, 3, 299, 299)
    assert torch.allclose(x, torch.full_like(x, -1.0))


def test_preprocess_rejects_non_rgb() -> None:
    with pytest.raises(ValueError, match="3 colour channels"):
        im.preprocess(np.zeros((2, 32, 32, 4), dtype=np.uint8), im.CIFAR10)


def test_to_display_rejects_a_batch() -> None:
    with pytest.raises(ValueError, match="one RGB image"):
        im.to_display(torch.zeros(2, 3, 8, 8), im.CIFAR10)


def test_preprocessing_for_each_kind() -> None:
    from xception_lib.data import DATASETS

    assert im.preprocessing_for("imagenet") == im.IMAGENET_XCEPTION
    cifar = im.preprocessing_for("cifar10")
    assert cifar.size == 32
    assert (cifar.mean, cifar.std) == (DATASETS["cifar10"]["mean"], DATASETS["cifar10"]["std"])  # one source
    with pytest.raises(ValueError, match="kind must be one of"):
        im.preprocessing_for("random")


def test_imagenet_categories_are_the_usual_1000() -> None:
    names = im.class_names_for("imagenet")
    assert names[0] == "tench" and names[281] == "tabby"


def test_example_images_for_imagenet_models_are_the_photos() -> None:
    images = im.example_images("imagenet", n=2)
    assert list(images) == list(im.PHOTO_NAMES[:2])
    with pytest.raises(ValueError, match="kind must be one of"):
        im.example_images("random")


@pytest.mark.data
def test_cifar_test_images_are_of_distinct_classes() -> None:
    from xception_lib import data

    try:
        arrays = data.load_cifar("cifar10", download=False)
    except Exception as error:  # no local copy
        pytest.skip(f"CIFAR-10 unavailable here: {error}")
    images = im.example_images("cifar10", n=4, seed=1)
    assert len(images) == 4 and images.keys() == im.example_images("cifar10", n=4, seed=1).keys()  # fixed by the seed
    classes = [name.split(": ")[1] for name in images]
    assert len(set(classes)) == 4
    for name, image in images.items():
        index = int(name.split()[1].rstrip(":"))
        assert arrays.classes[int(arrays.test_labels[index])] == name.split(": ")[1]
        np.testing.assert_array_equal(image, arrays.test_images[index].permute(1, 2, 0).numpy())
    x = im.preprocess(list(images.values()), im.preprocessing_for("cifar10"))
    assert x.shape == (4, 3, 32, 32)
    with pytest.raises(ValueError, match=r"n must be in \[1, 10\] \(one image per class\)"):
        im.example_images("cifar10", n=11)


def test_class_names_for_each_kind() -> None:
    assert len(im.class_names_for("imagenet", 1000)) == 1000
    assert im.class_names_for("cifar10")[3] == "cat"
    with pytest.raises(ValueError, match="kind must be one of"):
        im.class_names_for("random")
    with pytest.raises(ValueError, match="expected a model with 10 outputs"):
        im.class_names_for("cifar10", 100)


def test_preprocess_refuses_0_255_values_unless_uint8() -> None:
    """Issue 24: float or int64 images in 0-255 were clamped to 1, up to 4 normalised units off the uint8 path."""
    image = np.random.default_rng(1).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    expected = im.preprocess(image, im.CIFAR10)
    torch.testing.assert_close(im.preprocess(image.astype(np.float64) / 255, im.CIFAR10), expected)
    with pytest.raises(ValueError, match=r"expected float images in \[0, 1\], got values in \[0, 255\].*uint8"):
        im.preprocess(image.astype(np.float32), im.CIFAR10)
    with pytest.raises(TypeError, match="expected uint8 images.*got torch.int64"):
        im.preprocess(torch.from_numpy(image.astype(np.int64)), im.CIFAR10)
