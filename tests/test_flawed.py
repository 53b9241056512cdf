"""flawed and chapter 4's flaws: each flaw (run from the page's own cells) does what it claims, and with none the
model is Xception."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

import xception_lib as xl
from xception_lib.chapters import anatomy as an
from xception_lib.chapters import flawed as fl

CHAPTER = Path(__file__).resolve().parents[1] / "book" / "04_reading_critically.ipynb"


def page_code() -> dict:
    """The flaw functions and ``build`` exactly as chapter 4 writes them (its cells tagged ``flaws``)."""
    cells = [c for c in json.loads(CHAPTER.read_text())["cells"] if "flaws" in c["metadata"].get("tags", [])]
    namespace = {"xl": xl, "nn": nn, "torch": torch, "OrderedDict": OrderedDict, "flawed": fl}
    for cell in cells:
        exec("".join(cell["source"]), namespace)  # noqa: S102 - the book's own code
    return namespace


PAGE = page_code()
build, FLAWS = PAGE["build"], PAGE["FLAWS"]
POST = fl.post_config()
TINY = xl.XceptionConfig.timm_port(width_multiplier=0.25, middle_blocks=3, num_classes=7)
NEUTRAL = ("stem_stride_1", "stem_padding", "fixed_size_pool", "exit_relu_before")  # keep the state dict


def ceil_half(n: int) -> int:
    return -(-n // 2)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # a shared tensor is listed once


def build_meta(flaws, cfg: xl.XceptionConfig = fl.post_config()) -> xl.Xception:  # noqa: ANN001, B008
    return build(flaws, cfg, device="meta")


def redraw_change(model: nn.Module, x: torch.Tensor) -> float:
    """How much the training-mode output moves when every convolution bias is redrawn (chapter 4's check)."""
    probe = copy.deepcopy(model).train()
    with torch.no_grad():
        before = probe(x)
        for m in probe.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=torch.Generator().manual_seed(0)))
        after = probe(x)
    return float((after - before).abs().max() / before.abs().max())


def logit_change(flaws: tuple[str, ...], reference: xl.Xception, x: torch.Tensor) -> float | None:
    """Chapter 4's output comparison: the flawed model with the reference's tensors (strict load)."""
    model = build(flaws, reference.config).to_empty(device="cpu").eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    try:
        with torch.no_grad():
            got = model(x)
    except (RuntimeError, ValueError):
        return None
    with torch.no_grad():
        expected = reference(x)
    return float((got - expected).abs().max() / expected.abs().max())


def accepted_sizes(model: nn.Module, sizes: list[int]) -> list[int]:
    """Chapter 4's check: the square sizes a model (eval mode: one image is a batch) runs on to the logits."""
    model.eval()
    ok = []
    for size in sizes:
        try:
            model(torch.zeros(1, 3, size, size, device="meta"))
        except (RuntimeError, ValueError):
            continue
        ok.append(size)
    return ok


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


def test_fix_sequence_fixes_one_flaw_per_step() -> None:
    steps = fl.fix_sequence()
    assert steps[0] == ("as published", fl.FLAW_NAMES) and steps[-1][1] == ()
    for (_, before), (label, after) in zip(steps, steps[1:], strict=False):
        fixed = set(before) - set(after)
        assert len(fixed) == 1 and label == f"fix {fixed.pop()}" and set(after) < set(before)


def test_unknown_flaw_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown flaw 'not_a_flaw'; expected one of"):
        fl.param_delta("not_a_flaw")


def test_the_page_defines_one_function_per_flaw_in_order() -> None:
    assert tuple(FLAWS) == fl.FLAW_NAMES


def test_neutral_flaws_are_exactly_those_that_keep_the_state_dict() -> None:
    assert NEUTRAL == tuple(n for n in fl.FLAW_NAMES if fl.matches_reference(build_meta([n], TINY)))


def test_no_flaw_is_the_paper_model_and_flaws_apply_in_one_order() -> None:
    torch.manual_seed(0)
    paper = xl.Xception(TINY)
    torch.manual_seed(0)
    unchanged = build((), TINY, device="cpu").state_dict()
    assert all(torch.equal(a, b) for a, b in zip(paper.state_dict().values(), unchanged.values(), strict=True))
    shapes = {k: v.shape for k, v in build_meta(reversed(fl.FLAW_NAMES), TINY).state_dict().items()}
    assert shapes == {k: v.shape for k, v in build_meta(fl.FLAW_NAMES, TINY).state_dict().items()}


@pytest.mark.parametrize("cfg", [POST, TINY], ids=["post", "tiny"])
@pytest.mark.parametrize("name", fl.FLAW_NAMES)
def test_each_flaw_moves_the_parameters_its_formula_says(name: str, cfg: xl.XceptionConfig) -> None:
    reference = n_params(an.meta_model(cfg))
    flawed = n_params(build_meta([name], cfg))
    assert flawed - reference == fl.param_delta(name, cfg)
    if name not in NEUTRAL:
        assert fl.param_delta(name, cfg) != 0


def test_deltas_add_up_except_for_sharing() -> None:
    one_block = dataclasses.replace(POST, middle_blocks=1)  # sharing one block changes nothing
    every_other = [n for n in fl.FLAW_NAMES if n != "shared_middle_block"]
    expected = n_params(an.meta_model(one_block)) + sum(fl.param_delta(n, one_block) for n in fl.FLAW_NAMES)
    assert n_params(build_meta(every_other, one_block)) == expected
    # eight applications of one shared block hold the weights of one block
    assert n_params(build_meta(fl.FLAW_NAMES, POST)) == expected


def test_shared_middle_block_is_one_set_of_weights() -> None:
    shared = fl.middle_flow_usage(build_meta(["shared_middle_block"], POST))
    distinct = fl.middle_flow_usage(build_meta([], POST))
    convs_per_block = 3 * 2  # three separable convolutions, each depthwise + pointwise
    assert shared == (8 * convs_per_block, convs_per_block)
    assert distinct == (8 * convs_per_block, 8 * convs_per_block)


def test_regular_depthwise_is_a_full_convolution() -> None:
    seps = PAGE["separables"](build_meta(["regular_depthwise"], TINY))
    assert len(seps) == len(TINY.separable_layers())
    assert all(s.depthwise.groups == 1 and s.depthwise.weight.shape[1] == s.depthwise.in_channels for s in seps)
    assert all(s.depthwise.groups == s.depthwise.in_channels for s in PAGE["separables"](build_meta([], TINY)))


def test_stem_flaws_change_the_shapes() -> None:
    def stem_sizes(flaws: tuple[str, ...]) -> tuple[int, int]:
        stem, x = build_meta(flaws, POST).stem, torch.zeros(1, 3, 299, 299, device="meta")
        return stem.conv1(x).shape[-1], stem[:4](x).shape[-1]  # after conv1, after conv2

    assert stem_sizes(()) == (149, 147)
    assert stem_sizes(("stem_padding",)) == (150, 150)
    assert stem_sizes(("stem_stride_1",)) == (297, 295)
    assert stem_sizes(("stem_stride_1", "stem_padding")) == (299, 299)


@pytest.mark.slow
def test_post_accepts_only_inputs_whose_exit_map_is_2x2() -> None:
    sizes = [15, 16, 17, 24, 32, 33, 64, 299]

    def exit_size(h: int) -> int:  # stride-1 padded stem, then four symmetric stride-2 pools
        for _ in range(4):
            h = ceil_half(h)
        return h

    expected = [s for s in sizes if exit_size(s) == 2]
    assert accepted_sizes(build_meta(fl.FLAW_NAMES, POST), sizes) == expected == [17, 24, 32]
    assert accepted_sizes(build_meta((), POST), sizes) == sizes
    assert accepted_sizes(build_meta(["fixed_size_pool"], POST), [64, 96, 299]) == [64]


def test_audit_row_of_the_post() -> None:
    row = fl.audit(build_meta(fl.FLAW_NAMES, POST), label="as published")
    assert row.label == "as published" and not row.logits_at_299
    assert row.shapes["stem"] == (1, 64, 299, 299) and row.shapes["exit_flow"] == (1, 2048, 19, 19)
    assert row.shapes["logits"] is None  # the flattened 18x18 map does not fit Linear(2048, 100)
    assert row.params == n_params(build_meta(fl.FLAW_NAMES, POST))
    assert row.reference_params == n_params(an.meta_model(POST))
    assert row.middle == (48, 6)
    fixed = fl.audit(build_meta((), POST), label="all fixed")
    with pytest.raises(TypeError, match="expected an xception_lib Xception"):
        fl.audit(nn.Linear(2, 2), label="not a model")  # type: ignore[arg-type]
    assert fixed.params == fixed.reference_params and fixed.logits_at_299
    assert fixed.shapes["exit_flow"] == (1, 2048, 10, 10) and fixed.shapes["logits"] == (1, 100)


@pytest.mark.slow
def test_audit_table_of_the_fix_sequence_fits_the_column() -> None:
    rows = [fl.audit(build_meta(flaws, TINY), label=label) for label, flaws in fl.fix_sequence()]
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
    flawed = build((), TINY, device="cpu")
    assert fl.matches_reference(flawed)
    reference = reference_with_statistics(TINY)
    flawed.load_state_dict(reference.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(flawed.eval()(image_71), reference(image_71))


def test_output_comparison_finds_the_relu_that_counts_miss() -> None:
    reference, x = reference_with_statistics(TINY), torch.randn(1, 3, 96, 96)
    assert logit_change((), reference, x) == 0.0
    relu = logit_change(("exit_relu_before",), reference, x)
    assert relu is not None and relu > 1e-3
    assert logit_change(("fixed_size_pool",), reference, x) is None  # a 3x3 exit map: the 2x2 pool cannot feed fc
    for stem_flaw in ("stem_stride_1", "stem_padding"):
        change = logit_change((stem_flaw,), reference, x)
        assert change is not None and change > 1e-3
    with pytest.raises(RuntimeError, match="bias"):  # a flaw that adds tensors cannot take the reference's strictly
        logit_change(("bias_before_bn",), reference, x)


def test_bias_before_batch_norm_cancels_in_training() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    redundant = build(["bias_before_bn"], TINY, device="cpu")
    convs = [m for m in redundant.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.bias is not None for m in convs) and len(convs) == len(TINY.separable_layers()) * 2 + 2 + 4
    assert redraw_change(redundant, x) < 1e-3
    # what float32 leaves is rounding: in float64 the same redraw moves the output by far less
    assert redraw_change(copy.deepcopy(redundant).double(), x.double()) < 1e-9
    # control: a shortcut convolution without batch norm keeps its bias, and it matters
    assert redraw_change(build(["bias_before_bn", "shortcut_without_bn"], TINY, device="cpu"), x) > 1e-2


def test_relu_between_and_after_pointwise_are_there() -> None:
    (between,) = PAGE["separables"](build(["bn_relu_between"], TINY, device="cpu").exit_flow.sep1)
    assert isinstance(between.intermediate.act, nn.ReLU) and isinstance(between, xl.SeparableConv2d)
    (after,) = PAGE["separables"](build(["bn_relu_after_pointwise"], TINY, device="cpu").exit_flow.sep1)
    assert list(after._modules) == ["depthwise", "intermediate", "pointwise", "after"]
    x = torch.randn(2, after.depthwise.in_channels, 6, 6)
    assert (after.eval()(x) >= 0).all()  # the separable convolution now ends in a ReLU


def test_batch_norm_flaws_remove_those_batch_norms() -> None:
    model = build_meta(["entry_block1_no_bn", "shortcut_without_bn"], TINY)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.entry_flow.block1.layers)
    shortcuts = [b.shortcut for b in model.modules() if isinstance(b, xl.XceptionBlock) and b.shortcut is not None]
    assert [list(s._modules) for s in shortcuts if isinstance(s, nn.Sequential)] == [["conv"]] * 4


def test_exit_relu_before_moves_the_two_relus() -> None:
    order = list(build_meta(["exit_relu_before"], TINY).exit_flow._modules)
    assert order == ["block", "pre_act1", "sep1", "bn1", "pre_act2", "sep2", "bn2"]


def test_the_posts_state_dict_differs_where_the_chapter_says() -> None:
    ours, theirs = build_meta(fl.FLAW_NAMES, POST).state_dict(), an.meta_model(POST).state_dict()
    assert "middle_flow.block.layers.sep1.pointwise.weight" in ours  # the one shared block
    assert not any(k.startswith("middle_flow.block8.") for k in ours)
    wrong = [k for k in theirs if k in ours and ours[k].shape != theirs[k].shape]
    assert wrong and all(k.endswith("depthwise.weight") for k in wrong)  # the regular 3x3 convolutions
    assert not fl.matches_reference(build_meta(fl.FLAW_NAMES, POST)) and fl.matches_reference(build_meta((), POST))


def test_plot_fix_sequence_is_drawn_for_the_column() -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.text import Text

    rows = [
        fl.audit(build_meta(fl.FLAW_NAMES, TINY), label="as published"),
        fl.audit(build_meta((), TINY), label="all fixed"),
    ]
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
