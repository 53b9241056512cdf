"""XceptionConfig: validation, presets, and channel scaling."""

from __future__ import annotations

import dataclasses
import re

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
        ("width_multiplier", 0.0, r"width_multiplier must be in \(0, inf\), got 0.0"),
        ("dropout", 1.0, r"dropout must be in \[0, 1\), got 1.0"),
        ("entry_strides", (2, 3, 2), "entry_strides"),
        ("segments", 3, "segments=3 must divide"),
        ("segments", 0, "segments must be >= 1, got 0"),
        ("bn_eps", 0.0, r"bn_eps must be in \(0, inf\)"),
        ("bn_momentum", 1.5, r"bn_momentum must be in \[0, 1\], got 1.5"),
        ("entry_channels", (128, 0, 728), r"entry_channels\[1\] must be >= 1, got 0"),
        ("in_channels", 0, "in_channels must be >= 1"),
    ],
)
def test_bad_config_values_raise_clear_errors(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        xl.XceptionConfig.imagenet(**{field: value})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_classes", "10", "num_classes must be an int, got '10' (str)"),
        ("num_classes", True, "num_classes must be an int, got True (bool)"),
        ("num_classes", 10.0, "num_classes must be an int, got 10.0 (float)"),
        ("middle_blocks", 1.5, "middle_blocks must be an int"),
        ("exit_stride", True, "exit_stride must be an int"),
        ("segments", 4.0, "segments must be an int"),
        ("entry_channels", [128, 256, 728], "entry_channels must be a tuple of 3 ints"),
        ("stem_channels", (32,), "stem_channels must be a tuple of 2 ints"),
        ("exit_channels", (1024, 1536.5, 2048), "exit_channels[1] must be an int"),
        ("entry_strides", (2, True, 2), "entry_strides[1] must be an int"),
        ("width_multiplier", float("nan"), "width_multiplier must be a finite real number, got nan"),
        ("width_multiplier", float("inf"), "width_multiplier must be a finite real number"),
        ("width_multiplier", "1.0", "width_multiplier must be a finite real number"),
        ("dropout", float("nan"), "dropout must be a finite real number"),
        ("bn_eps", None, "bn_eps must be a finite real number"),
        ("bn_momentum", False, "bn_momentum must be a finite real number"),
        ("residual", 1, "residual must be True or False, got 1"),
    ],
)
def test_bad_config_types_raise_type_errors_naming_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        xl.XceptionConfig.imagenet(**{field: value})


def test_numpy_integers_and_integral_floats_where_reals_are_expected_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    cfg = xl.XceptionConfig.imagenet(num_classes=np.int64(10), width_multiplier=1, dropout=0)
    assert xl.Xception(cfg).head.fc.out_features == 10


def test_channels_round_to_multiples_of_8() -> None:
    paper = xl.XceptionConfig.imagenet()
    assert all(paper.channels(c) == c for c in (32, 64, 128, 256, 728, 1024, 1536, 2048))
    assert xl.XceptionConfig.imagenet(width_multiplier=0.5).channels(728) == 368  # 364: to the nearest multiple of 8
    assert xl.XceptionConfig.imagenet(width_multiplier=0.01).channels(32) == 8


def test_block_table_of_the_paper_is_figure_5() -> None:
    blocks = xl.XceptionConfig.imagenet().blocks()
    assert [(b.flow, b.in_channels, b.out_channels, b.reps, b.stride) for b in blocks] == [
        ("entry_flow", 64, 128, 2, 2),
        ("entry_flow", 128, 256, 2, 2),
        ("entry_flow", 256, 728, 2, 2),
        *[("middle_flow", 728, 728, 3, 1)] * 8,
        ("exit_flow", 728, 1024, 2, 2),
    ]
    assert [b.start_with_relu for b in blocks] == [False] + [True] * 11
    assert blocks[-1].widths() == [(728, 728), (728, 1024)] and blocks[0].widths() == [(64, 128), (128, 128)]
    assert [b.projects for b in blocks] == [True] * 3 + [False] * 8 + [True]


def test_blocks_apply_width_depth_and_the_cifar_strides() -> None:
    blocks = xl.XceptionConfig.cifar(width_multiplier=0.5, middle_blocks=2).blocks()
    assert [(b.in_channels, b.out_channels, b.stride) for b in blocks] == [
        (32, 64, 1),
        (64, 128, 2),
        (128, 256, 2),
        (256, 256, 1),
        (256, 256, 1),
        (256, 384, 2),
    ]
    assert xl.XceptionConfig.imagenet(middle_blocks=0).blocks()[-1].in_channels == 728


def test_separable_in_channels_lists_every_separable_conv() -> None:
    cfg = xl.XceptionConfig.imagenet()
    model = xl.Xception(cfg)
    seps = [m for m in model.modules() if isinstance(m, xl.SeparableConv2d)]
    assert [("entry_flow", m.depthwise.in_channels, m.pointwise.out_channels) for m in seps][:2] == [
        ("entry_flow", 64, 128),
        ("entry_flow", 128, 128),
    ]
    assert [(m.depthwise.in_channels, m.pointwise.out_channels) for m in seps] == [
        (i, o) for _, i, o in cfg.separable_layers()
    ]
    assert [m.depthwise.in_channels for m in seps] == cfg.separable_in_channels()
    assert len(seps) == 2 * 3 + 3 * 8 + 2 + 2  # entry, middle, exit block, exit convs


@pytest.mark.parametrize("preset", [xl.XceptionConfig.imagenet, xl.XceptionConfig.cifar, xl.XceptionConfig.timm_port])
def test_to_dict_is_json_and_gives_the_config_back(preset) -> None:  # noqa: ANN001
    import json

    cfg = preset(segments=8 if preset is xl.XceptionConfig.cifar else None)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data == cfg.to_dict() and data["entry_channels"] == list(cfg.entry_channels)
    assert xl.XceptionConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}) == cfg


def test_to_dict_converts_numpy_numbers() -> None:
    import json

    np = pytest.importorskip("numpy")
    cfg = xl.XceptionConfig.imagenet(num_classes=np.int64(10), dropout=np.float32(0.5), stem_channels=(np.int32(8), 16))
    data = json.loads(json.dumps(cfg.to_dict()))  # would raise on numpy integers
    assert data["num_classes"] == 10 and type(cfg.to_dict()["num_classes"]) is int
    assert data["stem_channels"] == [8, 16] and data["dropout"] == 0.5
