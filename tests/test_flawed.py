"""flawed: every flaw switch does what it claims, and with none the model is Xception."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import xception_lib as xl
from xception_lib.chapters import anatomy as an
from xception_lib.chapters import flawed as fl

POST = fl.post_config()
TINY = xl.XceptionConfig.timm_port(width_multiplier=0.25, middle_blocks=3, num_classes=7)
NEUTRAL = ("stem_stride_1", "stem_padding", "fixed_size_pool", "exit_relu_before")


def flaws_on(*names: str) -> fl.Flaws:
    return fl.Flaws(**{n: n in names for n in fl.FLAW_NAMES})


def ceil_half(n: int) -> int:
    return -(-n // 2)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # a shared tensor is listed once


def reference_with_statistics(cfg: xl.XceptionConfig, seed: int = 0) -> xl.Xception:
    """A random Xception whose batch norms have random running statistics, in eval mode."""
    torch.manual_seed(seed)
    model = xl.Xception(cfg)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


# ---------------------------------------------------------------- the switches


def test_flaws_constructors() -> None:
    assert fl.Flaws().active() == fl.FLAW_NAMES
    assert fl.Flaws.none().active() == ()
    assert fl.Flaws.only("stem_padding").active() == ("stem_padding",)
    assert fl.Flaws.only("stem_padding", "stem_stride_1").active() == ("stem_stride_1", "stem_padding")
    assert fl.Flaws().fix("stem_padding", "regular_depthwise").active() == tuple(
        n for n in fl.FLAW_NAMES if n not in ("stem_padding", "regular_depthwise")
    )
    with pytest.raises(ValueError, match="unknown flaw"):
        fl.Flaws.only("not_a_flaw")
    with pytest.raises(dataclasses.FrozenInstanceError):
        fl.Flaws().stem_padding = False  # type: ignore[misc]


def test_fix_sequence_fixes_one_flaw_per_step() -> None:
    steps = fl.fix_sequence()
    assert steps[0] == ("as published", fl.Flaws()) and steps[-1][1] == fl.Flaws.none()
    for (_, before), (label, after) in zip(steps, steps[1:]):
        fixed = set(before.active()) - set(after.active())
        assert len(fixed) == 1 and label == f"fix {fixed.pop()}" and set(after.active()) < set(before.active())
    with pytest.raises(ValueError, match="permutation"):
        fl.fix_sequence(fl.FLAW_NAMES[:-1])


def test_rejects_configs_it_does_not_start_from() -> None:
    with pytest.raises(ValueError, match=r"paper's architecture: .* got \('imagenet', False, None, 'none'\)"):
        fl.FlawedXception(config=xl.XceptionConfig.imagenet(residual=False))
    with pytest.raises(ValueError, match=r"got \('cifar', True, None, 'none'\)"):
        fl.FlawedXception(config=xl.XceptionConfig.cifar())


@pytest.mark.parametrize("cfg", [POST, TINY], ids=["post", "tiny"])
@pytest.mark.parametrize("name", fl.FLAW_NAMES)
def test_each_flaw_moves_the_parameters_its_formula_says(name: str, cfg: xl.XceptionConfig) -> None:
    reference = n_params(an.meta_model(cfg))
    flawed = n_params(fl.build_meta(fl.Flaws.only(name), cfg))
    assert flawed - reference == fl.param_delta(name, cfg)
    if name not in NEUTRAL:
        assert fl.param_delta(name, cfg) != 0


def test_deltas_add_up_except_for_sharing() -> None:
    one_block = dataclasses.replace(POST, middle_blocks=1)  # sharing one block changes nothing
    every_other = fl.Flaws().fix("shared_middle_block")
    expected = n_params(an.meta_model(one_block)) + sum(fl.param_delta(n, one_block) for n in fl.FLAW_NAMES)
    assert n_params(fl.build_meta(every_other, one_block)) == expected
    # eight applications of one shared block hold the weights of one block
    assert n_params(fl.build_meta(fl.Flaws(), POST)) == expected


def test_shared_middle_block_is_one_set_of_weights() -> None:
    shared = fl.middle_flow_usage(fl.build_meta(fl.Flaws.only("shared_middle_block"), POST))
    distinct = fl.middle_flow_usage(fl.build_meta(fl.Flaws.none(), POST))
    convs_per_block = 3 * 2  # three separable convolutions, each depthwise + pointwise
    assert shared == fl.MiddleFlowUsage(applications=8 * convs_per_block, distinct=convs_per_block)
    assert distinct == fl.MiddleFlowUsage(applications=8 * convs_per_block, distinct=8 * convs_per_block)


def test_regular_depthwise_is_a_full_convolution() -> None:
    sep = fl.FlawedSeparableConv2d(16, 32, fl.Flaws.only("regular_depthwise"), TINY)
    assert sep.depthwise.groups == 1 and sep.depthwise.weight.shape == (16, 16, 3, 3)
    sep = fl.FlawedSeparableConv2d(16, 32, fl.Flaws.none(), TINY)
    assert sep.depthwise.groups == 16 and sep.depthwise.weight.shape == (16, 1, 3, 3)


def test_stem_flaws_change_the_shapes() -> None:
    def stem_sizes(flaws: fl.Flaws) -> tuple[int, int]:
        stem, x = fl.build_meta(flaws, POST).stem, torch.zeros(1, 3, 299, 299, device="meta")
        return stem.conv1(x).shape[-1], stem[:4](x).shape[-1]  # after conv1, after conv2

    assert stem_sizes(fl.Flaws.none()) == (149, 147)
    assert stem_sizes(fl.Flaws.only("stem_padding")) == (150, 150)
    assert stem_sizes(fl.Flaws.only("stem_stride_1")) == (297, 295)
    assert stem_sizes(flaws_on("stem_stride_1", "stem_padding")) == (299, 299)


def test_post_accepts_only_inputs_whose_exit_map_is_2x2() -> None:
    sizes = [15, 16, 17, 24, 32, 33, 64, 299]

    def exit_size(h: int) -> int:  # stride-1 padded stem, then four symmetric stride-2 pools
        for _ in range(4):
            h = ceil_half(h)
        return h

    expected = [s for s in sizes if exit_size(s) == 2]
    assert fl.accepted_sizes(fl.build_meta(fl.Flaws(), POST), sizes) == expected == [17, 24, 32]
    assert fl.accepted_sizes(fl.build_meta(fl.Flaws.none(), POST), sizes) == sizes
    assert fl.accepted_sizes(fl.build_meta(fl.Flaws.only("fixed_size_pool"), POST), [64, 96, 299]) == [64]


def test_audit_row_of_the_post() -> None:
    row = fl.audit(fl.Flaws(), POST)
    assert row.label == "as published" and not row.logits_at_299
    assert row.shapes["stem"] == (1, 64, 299, 299) and row.shapes["exit_flow"] == (1, 2048, 19, 19)
    assert row.shapes["logits"] is None  # the flattened 18x18 map does not fit Linear(2048, 100)
    assert row.params == n_params(fl.build_meta(fl.Flaws(), POST))
    assert row.reference_params == n_params(an.meta_model(POST))
    assert row.middle == fl.MiddleFlowUsage(applications=48, distinct=6)
    fixed = fl.audit(fl.Flaws.none(), POST)
    assert fixed.params == fixed.reference_params and fixed.logits_at_299
    assert fixed.shapes["exit_flow"] == (1, 2048, 10, 10) and fixed.shapes["logits"] == (1, 100)


def test_audit_table_of_the_fix_sequence_fits_the_column() -> None:
    rows = [fl.audit(flaws, TINY, label=label) for label, flaws in fl.fix_sequence()]
    table = fl.audit_table(rows)
    assert list(table.index) == ["as published", *fl.FLAW_NAMES]
    assert table.loc["as published", "299 px"] == "no" and table.iloc[-1]["299 px"] == "yes"
    assert table.iloc[-1]["vs Xception"] == "+0" and table.iloc[-1]["exit"] == "10x10x512"
    assert table.loc["as published", "middle"] == "6/18" and table.iloc[-1]["middle"] == "18/18"
    assert max(len(line) for line in table.to_string().splitlines()) <= 88


def test_size_ranges() -> None:
    assert fl.size_ranges([17, 18, 19, 32, 40, 41]) == "17-19, 32, 40-41"
    assert fl.size_ranges([]) == "none"


# ---------------------------------------------------------------- function, not just counts


def test_all_fixed_is_xception_tensor_for_tensor(image_71: torch.Tensor) -> None:
    torch.manual_seed(0)
    flawed = fl.FlawedXception(fl.Flaws.none(), TINY)
    assert fl.matches_reference(flawed)
    reference = xl.Xception(TINY)
    reference.load_state_dict(flawed.state_dict(), strict=True)
    flawed.eval(), reference.eval()
    with torch.no_grad():
        assert torch.equal(flawed(image_71), reference(image_71))


def test_no_flaw_but_neutral_ones_keeps_the_state_dict() -> None:
    for name in fl.FLAW_NAMES:
        assert fl.matches_reference(fl.build_meta(fl.Flaws.only(name), TINY)) == (name in NEUTRAL)


def test_logit_checks_find_the_relu_that_counts_miss() -> None:
    reference, x = reference_with_statistics(TINY), torch.randn(1, 3, 96, 96)
    flaw_sets = [fl.Flaws.none(), fl.Flaws.only("exit_relu_before"), fl.Flaws.only("fixed_size_pool")]
    none, relu, pool = fl.logit_checks(flaw_sets, reference, x)
    assert none == 0.0
    assert relu is not None and relu > 1e-3
    assert pool is None  # 96 px leaves a 3x3 exit map: the 2x2 pool + flatten cannot feed the classifier
    stride, padding = fl.logit_checks([fl.Flaws.only("stem_stride_1"), fl.Flaws.only("stem_padding")], reference, x)
    assert stride is not None and stride > 1e-3 and padding is not None and padding > 1e-3
    with pytest.raises(ValueError, match="state dict"):
        fl.logit_checks([fl.Flaws.only("bias_before_bn")], reference, x)
    with pytest.raises(TypeError, match="Xception as the reference"):
        fl.logit_checks([fl.Flaws.none()], nn.Linear(2, 2), x)


def test_logit_checks_all_fixed_in_keras_conventions() -> None:
    cfg = xl.XceptionConfig.imagenet(width_multiplier=0.25, middle_blocks=2, num_classes=5)
    assert fl.logit_checks([fl.Flaws.none()], reference_with_statistics(cfg), torch.randn(2, 3, 80, 80)) == [0.0]


def test_bias_before_batch_norm_cancels_in_training() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    redundant = fl.FlawedXception(fl.Flaws.only("bias_before_bn"), TINY)
    assert fl.bias_change_in_train_mode(redundant, x) < 1e-3
    # what float32 leaves is rounding: in float64 the same redraw moves the output by far less
    assert fl.bias_change_in_train_mode(redundant.double(), x.double()) < 1e-9
    redundant.float()
    # control: a shortcut convolution without batch norm keeps its bias, and it matters
    useful = fl.FlawedXception(flaws_on("bias_before_bn", "shortcut_without_bn"), TINY)
    assert fl.bias_change_in_train_mode(useful, x) > 1e-2
    before = {k: v.clone() for k, v in useful.state_dict().items()}
    useful.eval()
    fl.bias_change_in_train_mode(useful, x)
    assert all(torch.equal(before[k], v) for k, v in useful.state_dict().items())  # left unchanged
    assert not useful.training
    with pytest.raises(ValueError, match="biases"):
        fl.bias_change_in_train_mode(fl.FlawedXception(fl.Flaws.none(), TINY), x)
    with pytest.raises(TypeError, match="dtype torch.float32, got torch.float64"):
        fl.bias_change_in_train_mode(redundant, x.double())


def test_relu_between_and_after_pointwise_are_there() -> None:
    sep = fl.FlawedSeparableConv2d(8, 16, fl.Flaws.only("bn_relu_between"), TINY)
    assert sep.between is not None and isinstance(sep.between.act, nn.ReLU) and sep.after is None
    sep = fl.FlawedSeparableConv2d(8, 16, fl.Flaws.only("bn_relu_after_pointwise"), TINY)
    assert sep.after is not None and isinstance(sep.after.act, nn.ReLU) and sep.between is None
    x = torch.randn(2, 8, 6, 6)
    assert (sep.eval()(x) >= 0).all()  # the separable convolution now ends in a ReLU


def test_load_matching_reports_what_it_skipped() -> None:
    torch.manual_seed(0)
    target = fl.FlawedXception(fl.Flaws.only("regular_depthwise"), TINY)
    report = fl.load_matching(target, xl.Xception(TINY))
    assert not report.complete and not report.missing and not report.unexpected
    assert report.wrong_shape and all(k.endswith("depthwise.weight") for k in report.wrong_shape)
    assert len(report.wrong_shape) == len(an.separable_layers(TINY))
    full = fl.load_matching(fl.FlawedXception(fl.Flaws.none(), TINY), xl.Xception(TINY))
    assert full.complete


def test_load_matching_copies_what_matches() -> None:
    torch.manual_seed(0)
    source = xl.Xception(TINY)
    target = fl.FlawedXception(fl.Flaws.only("regular_depthwise"), TINY)
    fl.load_matching(target, source)
    assert torch.equal(target.head.fc.weight, source.head.fc.weight)
    assert torch.equal(target.stem.conv1.weight, source.stem.conv1.weight)


def test_compare_state_dicts_of_the_post_on_meta() -> None:
    report = fl.compare_state_dicts(fl.build_meta(fl.Flaws(), POST), an.meta_model(POST))
    assert not report.complete
    assert any(k.startswith("middle_flow.block.") for k in report.missing)  # the one shared block
    assert any(k.startswith("middle_flow.block8.") for k in report.unexpected)
    assert fl.compare_state_dicts(fl.build_meta(fl.Flaws.none(), POST), an.meta_model(POST)).complete


def test_plot_fix_sequence_is_drawn_for_the_column() -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.text import Text

    rows = [fl.audit(fl.Flaws(), TINY), fl.audit(fl.Flaws.none(), TINY, label="all fixed")]
    fig = fl.plot_fix_sequence(rows)
    bars = fig.axes[0].patches
    assert len(bars) == 2 and bars[0].get_hatch() == "//" and not bars[1].get_hatch()
    assert bars[0].get_width() == rows[0].params / 1e6 and bars[1].get_width() == rows[0].reference_params / 1e6
    assert fig.get_figwidth() <= 7.5
    fig.draw_without_rendering()
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
    assert texts and min(t.get_fontsize() for t in texts) >= 9
    with pytest.raises(ValueError):
        fl.plot_fix_sequence([])
