"""Xception: the paper's numbers, the named stages, every config flag, and input checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import xception_lib as xl
from xception_lib import complexity as cx


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def outputs_differ(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    a.eval(), b.eval()
    with torch.no_grad():
        ya, yb = a(x), b(x)
    return ya.shape != yb.shape or not torch.allclose(ya, yb)


def same_weights(cfg_a: xl.XceptionConfig, cfg_b: xl.XceptionConfig) -> tuple[xl.Xception, xl.Xception]:
    """Two models whose shared tensors are identical (loaded non-strictly)."""
    torch.manual_seed(0)
    a = xl.Xception(cfg_a)
    b = xl.Xception(cfg_b)
    b.load_state_dict(a.state_dict(), strict=False)
    return a, b


# ---------------------------------------------------------------- the paper's numbers


def test_paper_parameter_count() -> None:
    assert n_params(xl.xception()) == 22_855_952  # the paper's Table 3


def test_paper_shapes_at_299() -> None:
    model = xl.xception().eval()
    with torch.no_grad():
        stages = model.forward_intermediates(torch.randn(1, 3, 299, 299))
        stem_1 = model.stem.act1(model.stem.bn1(model.stem.conv1(torch.randn(1, 3, 299, 299))))
    assert stem_1.shape == (1, 32, 149, 149)
    assert {k: tuple(v.shape) for k, v in stages.items()} == {
        "stem": (1, 64, 147, 147),
        "entry_flow.block1": (1, 128, 74, 74),
        "entry_flow.block2": (1, 256, 37, 37),
        "entry_flow.block3": (1, 728, 19, 19),
        "middle_flow": (1, 728, 19, 19),
        "exit_flow": (1, 2048, 10, 10),
    }
    with torch.no_grad():
        assert model.forward_head(stages["exit_flow"]).shape == (1, 1000)


def test_structure_follows_figure_5() -> None:
    model = xl.xception()
    entry = list(model.entry_flow.children())
    assert [b.layers.bn2.num_features for b in entry] == [128, 256, 728]
    assert not hasattr(entry[0].layers, "act1") and hasattr(entry[1].layers, "act1")  # stem already ReLU'd
    for block in entry:
        conv, bn = block.shortcut.conv, block.shortcut.bn
        assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and isinstance(bn, nn.BatchNorm2d)
    assert len(model.middle_flow) == 8
    middle_weights = {b.layers.sep1.pointwise.weight.data_ptr() for b in model.middle_flow}
    assert len(middle_weights) == 8  # each middle block has its own weights
    assert all(isinstance(b.shortcut, nn.Identity) for b in model.middle_flow)
    exit_block = model.exit_flow.block
    assert (exit_block.layers.sep1.pointwise.out_channels, exit_block.layers.sep2.pointwise.out_channels) == (728, 1024)
    assert model.exit_flow.sep1.pointwise.out_channels == 1536 and model.exit_flow.sep2.pointwise.out_channels == 2048
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None for c in convs)  # every conv is followed by batch norm
    assert model.stem.conv1.stride == (2, 2) and model.stem.conv1.padding == (0, 0)


def test_no_inplace_activations() -> None:
    relus = [m for m in xl.xception().modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(r.inplace for r in relus)


def test_forward_features_head_and_forward_agree(tiny_cfg: xl.XceptionConfig, image_71: torch.Tensor) -> None:
    model = xl.Xception(tiny_cfg).eval()
    with torch.no_grad():
        features = model.forward_features(image_71)
        assert torch.equal(model.forward_head(features), model(image_71))
        assert torch.equal(features, model.forward_intermediates(image_71)["exit_flow"])
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)


def test_xception_cifar_runs_on_32px_with_10_and_100_classes() -> None:
    x = torch.randn(4, 3, 32, 32)
    for classes in (10, 100):
        model = xl.xception_cifar(classes).eval()
        with torch.no_grad():
            assert model(x).shape == (4, classes)
    stages = xl.xception_cifar().eval().forward_intermediates(x)
    assert [tuple(v.shape[2:]) for v in stages.values()] == [(32, 32), (32, 32), (16, 16), (8, 8), (8, 8), (4, 4)]


def test_xception_cifar_trains_one_step() -> None:
    torch.manual_seed(0)
    model = xl.xception_cifar(width_multiplier=0.25, middle_blocks=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    loss0 = nn.functional.cross_entropy(model(x), y)
    loss0.backward()
    opt.step()
    assert all(p.grad is not None for p in model.parameters())
    assert nn.functional.cross_entropy(model(x), y) < loss0


# ---------------------------------------------------------------- every config flag changes the model


def test_flag_residual(tiny_cfg: xl.XceptionConfig, image_71: torch.Tensor) -> None:
    a, b = same_weights(tiny_cfg, dataclasses.replace(tiny_cfg, residual=False))
    shortcut_params = sum(n_params(m.shortcut) for m in a.modules() if isinstance(m, xl.XceptionBlock))
    assert shortcut_params > 0 and n_params(a) - n_params(b) == shortcut_params
    assert all(m.shortcut is None for m in b.modules() if isinstance(m, xl.XceptionBlock))
    assert outputs_differ(a, b, image_71)


@pytest.mark.parametrize("activation", ["relu", "elu"])
def test_flag_intermediate_activation(tiny_cfg: xl.XceptionConfig, image_71: torch.Tensor, activation: str) -> None:
    a, b = same_weights(tiny_cfg, dataclasses.replace(tiny_cfg, intermediate_activation=activation))
    assert n_params(a) == n_params(b)
    expected = nn.ReLU if activation == "relu" else nn.ELU
    seps = [m for m in b.modules() if isinstance(m, xl.SeparableConv2d)]
    assert all(isinstance(s.intermediate, expected) for s in seps)
    assert outputs_differ(a, b, image_71)


def test_flag_middle_blocks(tiny_cfg: xl.XceptionConfig) -> None:
    c = tiny_cfg.channels(tiny_cfg.entry_channels[-1])
    per_block = 3 * (cx.separable_params(c, c, 3) + 2 * c)  # 3 x (separable conv + BN gamma/beta)
    deeper = xl.Xception(dataclasses.replace(tiny_cfg, middle_blocks=tiny_cfg.middle_blocks + 3))
    assert n_params(deeper) - n_params(xl.Xception(tiny_cfg)) == 3 * per_block
    assert len(deeper.middle_flow) == tiny_cfg.middle_blocks + 3


def test_flag_width_multiplier(tiny_cfg: xl.XceptionConfig, image_71: torch.Tensor) -> None:
    wide = xl.Xception(dataclasses.replace(tiny_cfg, width_multiplier=0.5))
    assert wide.entry_flow.block3.layers.bn2.num_features == 368
    assert n_params(wide) > n_params(xl.Xception(tiny_cfg))
    with torch.no_grad():
        assert wide.eval().forward_features(image_71).shape[1] == 1024


def test_flag_stem(tiny_cfg: xl.XceptionConfig) -> None:
    x = torch.randn(1, 3, 32, 32)
    small = xl.Xception(dataclasses.replace(tiny_cfg, stem="cifar")).eval()
    paper = xl.Xception(tiny_cfg).eval()
    with torch.no_grad():
        assert small.forward_intermediates(x)["stem"].shape[-1] == 32
        assert paper.forward_intermediates(x)["stem"].shape[-1] == 13
    assert n_params(small) == n_params(paper)  # padding and stride only


def test_flag_segments(tiny_cfg: xl.XceptionConfig, image_71: torch.Tensor) -> None:
    segmented = dataclasses.replace(tiny_cfg, segments=4)
    model = xl.Xception(segmented)
    expected = sum(
        cx.conv_params(c, c, 3, groups=4) - cx.depthwise_params(c, 3) for c in tiny_cfg.separable_in_channels()
    )
    assert n_params(model) - n_params(xl.Xception(tiny_cfg)) == expected
    assert {m.depthwise.groups for m in model.modules() if isinstance(m, xl.SeparableConv2d)} == {4}
    with torch.no_grad():
        assert model.eval()(image_71).shape == (2, 7)


def test_flag_dropout(tiny_cfg: xl.XceptionConfig, image_71: torch.Tensor) -> None:
    model = xl.Xception(dataclasses.replace(tiny_cfg, dropout=0.5))
    features = model.eval().forward_features(image_71).detach()
    model.train()
    torch.manual_seed(0)
    a = model.forward_head(features)
    torch.manual_seed(1)
    b = model.forward_head(features)
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.equal(model.forward_head(features), model.forward_head(features))


def test_flag_bn_eps_and_momentum(tiny_cfg: xl.XceptionConfig, image_71: torch.Tensor) -> None:
    a, b = same_weights(tiny_cfg, dataclasses.replace(tiny_cfg, bn_eps=1e-5, bn_momentum=0.1))
    for m in a.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.fill_(1e-3)  # small variances make epsilon matter
    b.load_state_dict(a.state_dict())
    bns = [m for m in b.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.eps == 1e-5 and m.momentum == 0.1 for m in bns)
    assert outputs_differ(a, b, image_71)


def test_flag_pool_padding(tiny_cfg: xl.XceptionConfig) -> None:
    a, b = same_weights(tiny_cfg, dataclasses.replace(tiny_cfg, pool_padding="symmetric"))
    assert isinstance(a.entry_flow.block1.layers.pool, xl.MaxPool2dSame)
    assert isinstance(b.entry_flow.block1.layers.pool, nn.MaxPool2d)
    assert outputs_differ(a, b, torch.randn(1, 3, 299, 299))  # even sizes 74 and 38 inside


def test_flags_strides_classes_and_channels(tiny_cfg: xl.XceptionConfig) -> None:
    model = xl.Xception(
        dataclasses.replace(tiny_cfg, entry_strides=(1, 2, 2), exit_stride=1, num_classes=3, in_channels=1)
    )
    with torch.no_grad():
        stages = model.eval().forward_intermediates(torch.randn(1, 1, 71, 71))
        assert stages["stem"].shape[-1] == stages["entry_flow.block1"].shape[-1] == 33  # 71 -> 35 -> 33
        assert stages["entry_flow.block3"].shape[-1] == stages["exit_flow"].shape[-1] == 9  # 33 -> 17 -> 9
        assert model(torch.randn(1, 1, 71, 71)).shape == (1, 3)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((3, 299, 299), r"expected a 4-D tensor N x 3 x H x W with H, W >= 7, got a 3-D tensor"),
        ((1, 1, 299, 299), r"expected 3 input channels, got 1"),
        ((1, 3, 6, 6), r"image of 6x6 is too small for the stem"),
    ],
)
def test_bad_input_raises_value_error_with_expected_shape(shape: tuple[int, ...], message: str) -> None:
    model = xl.xception(width_multiplier=0.25, middle_blocks=0)
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*shape))
    with pytest.raises(ValueError, match=message):
        model.forward_intermediates(torch.randn(*shape))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_integer_images_raise_type_error_saying_what_to_do(dtype: torch.dtype) -> None:
    model = xl.xception_cifar(width_multiplier=0.25, middle_blocks=0)
    images = torch.zeros(2, 3, 32, 32, dtype=dtype)  # what a uint8 image tensor looks like
    with pytest.raises(
        TypeError, match=rf"floating-point image batch, got dtype {dtype}: convert to float and normalise"
    ):
        model(images)
    with torch.no_grad():
        assert model.eval()(images.float() / 255).shape == (2, 10)


def test_float64_images_for_a_float32_model_raise_type_error() -> None:
    model = xl.xception_cifar(width_multiplier=0.25, middle_blocks=0).eval()
    images = torch.zeros(2, 3, 32, 32, dtype=torch.float64)  # what torch.from_numpy gives
    with pytest.raises(TypeError, match=r"expected torch.float32 images like the model's weights, got torch.float64"):
        model(images)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(images.float()).shape == (2, 10)  # autocast: float32 in, bf16 inside
    with torch.no_grad():
        assert model.double()(images).dtype == torch.float64


def test_block_is_built_from_its_spec_and_config() -> None:
    spec = xl.config.BlockSpec("exit_flow", 16, 32, reps=2, stride=2, start_with_relu=True, grow_first=False)
    cfg = xl.XceptionConfig.imagenet(
        intermediate_activation="relu",
        segments=4,
        bn_eps=1e-5,
        bn_momentum=0.1,
        pool_padding="symmetric",
        width_multiplier=0.25,
    )
    block = xl.XceptionBlock(spec, cfg)
    assert [type(m).__name__ for m in block.layers] == [
        "ReLU",
        "SeparableConv2d",
        "BatchNorm2d",
        "ReLU",
        "SeparableConv2d",
        "BatchNorm2d",
        "MaxPool2d",
    ]
    assert (block.layers.sep1.pointwise.out_channels, block.layers.sep2.pointwise.out_channels) == (16, 32)
    assert block.layers.sep1.depthwise.groups == 4 and isinstance(block.layers.sep1.intermediate, nn.ReLU)
    assert block.layers.bn1.eps == 1e-5 and block.shortcut.bn.momentum == 0.1
    assert block(torch.randn(1, 16, 9, 9)).shape == (1, 32, 5, 5)
    middle = xl.config.BlockSpec("middle_flow", 8, 8, reps=3, stride=1, start_with_relu=True, grow_first=True)
    plain = xl.XceptionBlock(middle, xl.XceptionConfig())
    assert isinstance(plain.shortcut, nn.Identity) and not hasattr(plain.layers, "pool")
    assert xl.XceptionBlock(middle, xl.XceptionConfig(residual=False)).shortcut is None


def test_model_is_built_from_the_block_table() -> None:
    """Each block of the model has the widths, convolutions, pool and first ReLU of its row of the table."""
    for cfg in (xl.XceptionConfig.imagenet(), xl.XceptionConfig.cifar(width_multiplier=0.5, middle_blocks=2)):
        model = xl.Xception(cfg)
        built = [*model.entry_flow, *model.middle_flow, model.exit_flow.block]
        assert len(built) == len(cfg.blocks())
        for spec, block in zip(cfg.blocks(), built, strict=True):
            seps = [m for m in block.layers if isinstance(m, xl.SeparableConv2d)]
            assert [(s.depthwise.in_channels, s.pointwise.out_channels) for s in seps] == spec.widths()
            assert hasattr(block.layers, "pool") == (spec.stride != 1)
            assert isinstance(block.layers[0], nn.ReLU) == spec.start_with_relu
            assert isinstance(block.shortcut, nn.Sequential) == spec.projects


def test_builders_use_the_preset_and_overrides() -> None:
    assert xl.xception(width_multiplier=0.25, residual=False).config == xl.XceptionConfig.imagenet(
        width_multiplier=0.25, residual=False
    )
    assert xl.xception_cifar(100, dropout=0.5).config == xl.XceptionConfig.cifar(num_classes=100, dropout=0.5)


def test_non_tensor_input_raises_type_error() -> None:
    with pytest.raises(TypeError, match="expected a 4-D tensor"):
        xl.xception_cifar()([[0.0]])  # type: ignore[arg-type]


def test_smallest_accepted_image_runs() -> None:
    model = xl.xception(width_multiplier=0.25, middle_blocks=0).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 7, 7)).shape == (1, 1000)
    with torch.no_grad():
        assert xl.xception_cifar().eval()(torch.randn(1, 3, 1, 1)).shape == (1, 10)
