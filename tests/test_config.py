"""XceptionConfig: validation, presets, and channel scaling."""

from __future__ import annotations

import dataclasses

import pytest

import xception_lib as xl


def test_config_is_frozen() -> None:
    cfg = xl.XceptionConfig.imagenet()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.residual = False  # type: ignore[misc]


def test_replace_leaves_the_original_untouched() -> None:
    base = xl.XceptionConfig.cifar()
    ablation = dataclasses.replace(base, residual=False)
    assert base.residual and not ablation.residual


def test_presets_differ_where_documented() -> None:
    paper, port, cifar = xl.XceptionConfig.imagenet(), xl.XceptionConfig.timm_port(), xl.XceptionConfig.cifar()
    assert (paper.bn_eps, paper.pool_padding) == (1e-3, "same")
    assert (port.bn_eps, port.pool_padding) == (1e-5, "symmetric")
    assert dataclasses.replace(port, bn_eps=1e-3, bn_momentum=0.01, pool_padding="same") == paper
    assert cifar.stem == "cifar" and cifar.num_classes == 10


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("intermediate_activation", "tanh", "intermediate_activation must be one of"),
        ("stem", "resnet", "stem must be one of"),
        ("pool_padding", "valid", "pool_padding must be one of"),
        ("num_classes", 0, "num_classes must be >= 1"),
        ("middle_blocks", -1, "middle_blocks must be >= 0"),
        ("width_multiplier", 0.0, "width_multiplier must be > 0"),
        ("dropout", 1.0, "dropout must be in"),
        ("entry_strides", (2, 3, 2), "entry_strides"),
        ("segments", 3, "segments=3 must divide"),
        ("segments", 0, "segments must be None or >= 1"),
    ],
)
def test_bad_config_values_raise_clear_errors(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        xl.XceptionConfig.imagenet(**{field: value})


def test_scale_channels_rounds_to_multiples_of_8() -> None:
    assert [xl.scale_channels(c, 1.0) for c in (32, 64, 128, 256, 728, 1024, 1536, 2048)] == [
        32, 64, 128, 256, 728, 1024, 1536, 2048,
    ]
    assert xl.scale_channels(728, 0.5) == 368  # 364 rounds to the nearest multiple of 8
    assert xl.scale_channels(32, 0.01) == 8


def test_separable_in_channels_lists_every_separable_conv() -> None:
    cfg = xl.XceptionConfig.imagenet()
    model = xl.Xception(cfg)
    seps = [m.depthwise.in_channels for m in model.modules() if isinstance(m, xl.SeparableConv2d)]
    assert seps == cfg.separable_in_channels()
    assert len(seps) == 2 * 3 + 3 * 8 + 2 + 2  # entry, middle, exit block, exit convs
