"""A deliberately flawed Xception, with one switch per flaw, for chapter 4.

Chapter 4 reads a public blog post that summarises the Xception paper and ships a PyTorch model. Its code is not
reproduced here: :class:`FlawedXception` is this library's own model that makes the same *mistakes*, each behind a
field of :class:`Flaws`. ``Flaws()`` switches every flaw on (the post's model: same parameter count, shapes and
outputs); with ``Flaws.none()`` the model is :class:`~xception_lib.model.Xception`, tensor for tensor. The post's
batch-norm epsilon and symmetric max-pool padding are the PyTorch ports' conventions, not flaws: :func:`post_config`
is :meth:`~xception_lib.config.XceptionConfig.timm_port` with 100 classes. Chapter 4 writes each check that exposes
a flaw in plain PyTorch next to the function here.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from xception_lib.chapters.anatomy import format_shape, meta_model, separable_layers
from xception_lib.complexity import conv_params, depthwise_params, separable_params
from xception_lib.config import XceptionConfig
from xception_lib.model import block_layers
from xception_lib.pooling import MaxPool2dSame
from xception_lib.runtime import eval_mode

if TYPE_CHECKING:  # matplotlib and pandas are optional: imported inside the functions that use them
    import pandas
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Flaws:
    """Which of the post's flaws a :class:`FlawedXception` reproduces (``True``: flawed; the default: all), in the
    order chapter 4 fixes them."""

    regular_depthwise: bool = True  #: The "depthwise" 3x3 convolution keeps ``groups=1``, a regular one.
    shared_middle_block: bool = True  #: One middle block called eight times, 8 deep with one block of weights.
    bias_before_bn: bool = True  #: Every convolution has a bias, which the batch norm after it subtracts.
    bn_relu_between: bool = True  #: BN and ReLU between depthwise and pointwise (none is best, Figure 10).
    bn_relu_after_pointwise: bool = True  #: BN and ReLU after the pointwise step, before the block's BN.
    entry_block1_no_bn: bool = True  #: No batch norm after the first entry block's separable convolutions.
    shortcut_without_bn: bool = True  #: No batch norm after the 1x1 stride-2 shortcut convolutions.
    stem_stride_1: bool = True  #: The first stem convolution has stride 1 instead of 2.
    stem_padding: bool = True  #: Both stem convolutions pad by 1 (the paper has none, 299 -> 149 -> 147).
    fixed_size_pool: bool = True  #: A 2x2 stride-1 average pool and a flatten, so only 2x2 exit maps fit.
    exit_relu_before: bool = True  #: ReLU before, not after, the exit's last two separable convs (none on the output).

    @classmethod
    def none(cls) -> Flaws:
        """Every flaw fixed: the paper's architecture."""
        return cls(**dict.fromkeys(FLAW_NAMES, False))

    @classmethod
    def only(cls, *names: str) -> Flaws:
        """Only the named flaws, everything else fixed."""
        return dataclasses.replace(cls.none(), **dict.fromkeys(_checked(names), True))

    def fix(self, *names: str) -> Flaws:
        """A copy with the named flaws fixed."""
        return dataclasses.replace(self, **dict.fromkeys(_checked(names), False))

    def active(self) -> tuple[str, ...]:
        """Names of the flaws switched on, in :data:`FLAW_NAMES` order."""
        return tuple(name for name in FLAW_NAMES if getattr(self, name))


#: Every flaw, in the order chapter 4 fixes them.
FLAW_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Flaws))


def _checked(names: Sequence[str]) -> Sequence[str]:
    for name in names:
        if name not in FLAW_NAMES:
            raise ValueError(f"unknown flaw {name!r}; expected one of {FLAW_NAMES}")
    return names


def post_config(num_classes: int = 100) -> XceptionConfig:
    """The blog post's setting: the paper's widths, PyTorch's conventions, 100 classes."""
    return XceptionConfig.timm_port(num_classes=num_classes)


def _bn(channels: int, config: XceptionConfig) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=config.bn_eps, momentum=config.bn_momentum)


def _bn_relu(channels: int, config: XceptionConfig) -> nn.Sequential:
    return nn.Sequential(OrderedDict(bn=_bn(channels, config), act=nn.ReLU()))


class FlawedSeparableConv2d(nn.Module):
    """A 3x3 separable convolution where ``regular_depthwise``, ``bias_before_bn``, ``bn_relu_between`` and
    ``bn_relu_after_pointwise`` act; with no flaw it equals :class:`~xception_lib.layers.SeparableConv2d`."""

    def __init__(self, in_channels: int, out_channels: int, flaws: Flaws, config: XceptionConfig) -> None:
        super().__init__()
        groups = 1 if flaws.regular_depthwise else in_channels
        bias = flaws.bias_before_bn
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=groups, bias=bias)
        self.between = _bn_relu(in_channels, config) if flaws.bn_relu_between else None
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        self.after = _bn_relu(out_channels, config) if flaws.bn_relu_after_pointwise else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in (self.depthwise, self.between, self.pointwise, self.after):
            if step is not None:
                x = step(x)
        return x


class FlawedBlock(nn.Module):
    """A residual block: ``reps`` x (ReLU -> separable conv -> BN), a max-pool, a shortcut.

    The arguments are :class:`~xception_lib.model.XceptionBlock`'s, plus ``flaws`` and ``with_bn`` (whether a
    batch norm follows each separable convolution). With no flaw it equals ``XceptionBlock`` (same names).
    """

    def __init__(
        self, in_channels: int, out_channels: int, reps: int, stride: int, flaws: Flaws, config: XceptionConfig,
        *, start_with_relu: bool = True, grow_first: bool = True, with_bn: bool = True,
    ) -> None:
        super().__init__()
        layers = block_layers(
            in_channels, out_channels, reps, start_with_relu=start_with_relu, grow_first=grow_first,
            separable=lambda cin, cout: FlawedSeparableConv2d(cin, cout, flaws, config),
            norm=(lambda channels: _bn(channels, config)) if with_bn else None,
        )
        if stride != 1:
            same = config.pool_padding == "same"
            layers["pool"] = MaxPool2dSame(3, stride) if same else nn.MaxPool2d(3, stride, padding=1)
        self.layers = nn.Sequential(layers)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or stride != 1:
            shortcut = OrderedDict(conv=nn.Conv2d(in_channels, out_channels, 1, stride, bias=flaws.bias_before_bn))
            if not flaws.shortcut_without_bn:
                shortcut["bn"] = _bn(out_channels, config)
            self.shortcut = nn.Sequential(shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) + self.shortcut(x)


class SharedMiddleFlow(nn.Module):
    """The flaw ``shared_middle_block``: one ``block`` (one set of weights) applied ``repeats`` times."""

    def __init__(self, block: nn.Module, repeats: int) -> None:
        super().__init__()
        self.block = block
        self.repeats = repeats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.repeats):
            x = self.block(x)
        return x


class FlawedXception(nn.Module):
    """Xception with the seed blog post's flaws, each switchable.

    It has the stages of :class:`~xception_lib.model.Xception` (``stem``, ``entry_flow``, ``middle_flow``,
    ``exit_flow``, ``head``) and its ``stages`` and ``forward_intermediates``, so the same measurements run on
    both. Unlike ``Xception`` it does not check its input: finding out what it accepts is part of the audit.

    ``flaws`` defaults to all of them (the post's model), ``config`` to :func:`post_config`; the config must have
    the paper's architecture (ImageNet stem, residuals, no intermediate activation): the flaws are what changes it.
    """

    def __init__(self, flaws: Flaws | None = None, config: XceptionConfig | None = None) -> None:
        super().__init__()
        self.flaws = f = flaws if flaws is not None else Flaws()
        self.config = cfg = config if config is not None else post_config()
        got = (cfg.stem, cfg.residual, cfg.segments, cfg.intermediate_activation)
        if got != ("imagenet", True, None, "none"):
            expected = "(stem, residual, segments, intermediate_activation) = ('imagenet', True, None, 'none')"
            raise ValueError(f"FlawedXception starts from the paper's architecture: expected {expected}, got {got}")
        c = cfg.channels
        s1, s2 = c(cfg.stem_channels[0]), c(cfg.stem_channels[1])
        stride, pad, bias = (1 if f.stem_stride_1 else 2), (1 if f.stem_padding else 0), f.bias_before_bn
        stem = [nn.Conv2d(cfg.in_channels, s1, 3, stride, pad, bias=bias), _bn(s1, cfg), nn.ReLU()]
        stem += [nn.Conv2d(s1, s2, 3, 1, pad, bias=bias), _bn(s2, cfg), nn.ReLU()]
        self.stem = nn.Sequential(OrderedDict(zip(["conv1", "bn1", "act1", "conv2", "bn2", "act2"], stem)))
        entry: OrderedDict[str, nn.Module] = OrderedDict()
        prev = s2
        for i, (out, stride) in enumerate(zip(cfg.entry_channels, cfg.entry_strides)):
            bn = not (i == 0 and f.entry_block1_no_bn)
            entry[f"block{i + 1}"] = FlawedBlock(prev, c(out), 2, stride, f, cfg, start_with_relu=i > 0, with_bn=bn)
            prev = c(out)
        self.entry_flow = nn.Sequential(entry)

        self.middle_flow: nn.Module
        if f.shared_middle_block:
            self.middle_flow = SharedMiddleFlow(FlawedBlock(prev, prev, 3, 1, f, cfg), cfg.middle_blocks)
        else:
            blocks = ((f"block{i + 1}", FlawedBlock(prev, prev, 3, 1, f, cfg)) for i in range(cfg.middle_blocks))
            self.middle_flow = nn.Sequential(OrderedDict(blocks))

        e0, e1, e2 = (c(x) for x in cfg.exit_channels)
        exit_layers: OrderedDict[str, nn.Module] = OrderedDict(
            block=FlawedBlock(prev, e0, 2, cfg.exit_stride, f, cfg, grow_first=False)
        )
        for i, (cin, cout) in enumerate(((e0, e1), (e1, e2)), start=1):
            if f.exit_relu_before:
                exit_layers[f"pre_act{i}"] = nn.ReLU()
            exit_layers[f"sep{i}"] = FlawedSeparableConv2d(cin, cout, f, cfg)
            exit_layers[f"bn{i}"] = _bn(cout, cfg)
            if not f.exit_relu_before:
                exit_layers[f"act{i}"] = nn.ReLU()
        self.exit_flow = nn.Sequential(exit_layers)

        pool = nn.AvgPool2d(2, stride=1) if f.fixed_size_pool else nn.AdaptiveAvgPool2d(1)
        fc = nn.Linear(e2, cfg.num_classes)
        self.head = nn.Sequential(OrderedDict(pool=pool, flatten=nn.Flatten(1), dropout=nn.Dropout(cfg.dropout), fc=fc))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def stages(self) -> OrderedDict[str, nn.Module]:
        """The named stages, as in :meth:`xception_lib.model.Xception.stages`."""
        named = OrderedDict(stem=self.stem)
        named.update((f"entry_flow.{name}", block) for name, block in self.entry_flow.named_children())
        named.update(middle_flow=self.middle_flow, exit_flow=self.exit_flow)
        return named

    def forward_intermediates(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Every named stage's output, as in :meth:`xception_lib.model.Xception.forward_intermediates`."""
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name, stage in self.stages().items():
            x = stage(x)
            out[name] = x
        return out

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages().values():
            x = stage(x)
        return self.head(x)


def build_meta(flaws: Flaws | None = None, config: XceptionConfig | None = None) -> FlawedXception:
    """A :class:`FlawedXception` on the ``meta`` device: free to build, shapes only."""
    with torch.device("meta"):
        return FlawedXception(flaws, config)


def param_delta(name: str, config: XceptionConfig | None = None) -> int:
    """How many parameters flaw ``name`` alone adds to ``Xception(config)`` (negative: removes), in closed form.

    Computed from the config (default :func:`post_config`) with :mod:`xception_lib.complexity`'s formulas, never
    from a model, so that a test can hold :class:`FlawedXception` to it.
    """
    _checked([name])
    cfg = config if config is not None else post_config()
    c, seps = cfg.channels, separable_layers(cfg)
    shortcuts = [c(x) for x in cfg.entry_channels] + [c(cfg.exit_channels[0])]
    middle = c(cfg.entry_channels[2])
    deltas = {
        "regular_depthwise": sum(conv_params(cin, cin, 3) - depthwise_params(cin, 3) for _, cin, _ in seps),
        "shared_middle_block": -max(cfg.middle_blocks - 1, 0) * 3 * (separable_params(middle, middle, 3) + 2 * middle),
        "bias_before_bn": sum(c(s) for s in cfg.stem_channels) + sum(i + o for _, i, o in seps) + sum(shortcuts),
        "bn_relu_between": sum(2 * cin for _, cin, _ in seps),
        "bn_relu_after_pointwise": sum(2 * cout for _, _, cout in seps),
        "entry_block1_no_bn": -2 * 2 * c(cfg.entry_channels[0]),
        "shortcut_without_bn": -2 * sum(shortcuts),
    }
    return deltas.get(name, 0)


def accepted_sizes(model: nn.Module, sizes: Sequence[int]) -> list[int]:
    """The square input sizes (among ``sizes``) on which a model runs end to end, to the logits, in eval mode
    (where batch norm takes a batch of one image); on a ``meta``-device model (:func:`build_meta`) it costs little."""
    cin = getattr(getattr(model, "config", None), "in_channels", 3)
    ok = []
    with eval_mode(model), torch.no_grad():
        for size in sizes:
            try:
                model(torch.zeros(1, cin, size, size, device=next(model.parameters()).device))
            except (RuntimeError, ValueError):
                continue
            ok.append(size)
    return ok


def size_ranges(sizes: Sequence[int]) -> str:
    """``[17, 18, 19, 32, 40] -> '17-19, 32, 40'``; ``'none'`` if empty."""
    runs = [[s for _, s in run] for _, run in itertools.groupby(enumerate(sizes), lambda t: t[1] - t[0])]
    return ", ".join(f"{r[0]}" if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs) or "none"


@dataclass(frozen=True)
class MiddleFlowUsage:
    """How the middle flow uses its weights on one forward pass: ``applications`` of convolutions, and the
    ``distinct`` convolution modules (distinct weights) among them."""

    applications: int
    distinct: int


def middle_flow_usage(model: nn.Module) -> MiddleFlowUsage:
    """Count convolution calls in ``model.middle_flow`` (run alone on an 8x8 map) and the distinct modules (weights)
    making them."""
    convs = [m for m in model.get_submodule("middle_flow").modules() if isinstance(m, nn.Conv2d)]
    calls: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda module, _inputs, _output: calls.append(module)) for m in convs]
    try:
        with eval_mode(model), torch.no_grad():
            x = torch.zeros(1, convs[0].in_channels, 8, 8, device=convs[0].weight.device)
            model.get_submodule("middle_flow")(x)
    finally:
        for h in handles:
            h.remove()
    return MiddleFlowUsage(applications=len(calls), distinct=len(set(map(id, calls))))


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_matching` could copy."""

    loaded: int  #: Tensors copied (same name and shape).
    wrong_shape: tuple[str, ...]  #: Names in both with different shapes (left as they were).
    missing: tuple[str, ...]  #: Names only in the target (left as they were).
    unexpected: tuple[str, ...]  #: Names only in the source (ignored).

    @property
    def complete(self) -> bool:
        """Every tensor of both sides found its counterpart."""
        return not (self.wrong_shape or self.missing or self.unexpected)


def compare_state_dicts(target: nn.Module, source: nn.Module) -> LoadReport:
    """What a transplant of ``source``'s tensors into ``target`` would load, without loading (only names and
    shapes are compared, so ``meta``-device models work)."""
    theirs = {k: v.shape for k, v in source.state_dict().items()}
    ours = {k: v.shape for k, v in target.state_dict().items()}
    return LoadReport(
        loaded=sum(1 for k, v in theirs.items() if ours.get(k) == v),
        wrong_shape=tuple(k for k in theirs if k in ours and ours[k] != theirs[k]),
        missing=tuple(k for k in ours if k not in theirs),
        unexpected=tuple(k for k in theirs if k not in ours),
    )


def load_matching(target: nn.Module, source: nn.Module) -> LoadReport:
    """Copy into ``target`` every tensor of ``source`` (parameters and buffers) whose name and shape agree;
    ``report.complete`` means that a strict load would have worked."""
    report = compare_state_dicts(target, source)
    ours = target.state_dict()
    same = {k: v for k, v in source.state_dict().items() if k in ours and ours[k].shape == v.shape}
    target.load_state_dict(same, strict=False)
    return report


def matches_reference(model: FlawedXception) -> bool:
    """Whether a flawed model's state dict has exactly the keys and shapes of ``Xception(config)``."""
    return compare_state_dicts(model, meta_model(model.config)).complete


def bias_change_in_train_mode(model: nn.Module, x: torch.Tensor, *, seed: int = 0) -> float:
    """How much the output on ``x`` moves when every convolution bias is redrawn, in training mode.

    A bias added right before a batch norm is subtracted again with the batch mean, so in training mode redrawing
    those biases changes nothing but rounding. Returns ``max |f(x) - f'(x)| / max |f(x)|``, ``f'`` a copy of the
    model with biases drawn from a standard normal with ``seed``; ``x`` has the model's dtype.
    """
    dtype = next(model.parameters()).dtype
    if x.dtype != dtype:
        raise TypeError(f"expected an input of the model's dtype {dtype}, got {x.dtype}: convert one with .to()")
    probe = copy.deepcopy(model).train()
    convs = [m for m in probe.modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
    if not convs:
        raise ValueError("expected a model whose convolutions have biases (bias_before_bn=True), found none")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        before = probe(x)
        for m in convs:
            m.bias.copy_(torch.randn(m.bias.shape, generator=generator))
        after = probe(x)
    return float((after - before).abs().max() / before.abs().max())


def logit_checks(flaw_sets: Sequence[Flaws], reference: nn.Module, x: torch.Tensor) -> list[float | None]:
    """Give flawed models the tensors of ``reference`` (an :class:`~xception_lib.model.Xception`) and compare logits.

    Each flawed model (the reference's config) gets the reference's tensors by a strict load, so any difference
    comes from the flaws that move no parameter: only ``stem_stride_1``, ``stem_padding``, ``fixed_size_pool`` and
    ``exit_relu_before`` may be on. Give the reference's batch norms random running statistics first, or a
    misplaced layer can hide behind an identity. Returns, for each flaw set, ``max |flawed(x) - reference(x)| /
    max |reference(x)|`` in eval mode, or ``None`` when the flawed model rejects ``x``.
    """
    if not isinstance(getattr(reference, "config", None), XceptionConfig):
        raise TypeError(f"expected an xception_lib Xception as the reference, got {type(reference).__name__}")
    models = [build_meta(flaws, reference.config) for flaws in flaw_sets]
    for flaws, model in zip(flaw_sets, models):
        if not matches_reference(model):
            raise ValueError(
                f"logit_checks needs flaws that keep Xception's state dict; {flaws.active()} change it "
                "(only stem_stride_1, stem_padding, fixed_size_pool, exit_relu_before may be on)"
            )
    with eval_mode(reference), torch.no_grad():
        expected = reference(x)
    results: list[float | None] = []
    for model in models:
        model = model.to_empty(device=x.device).eval()  # every tensor comes from the reference
        model.load_state_dict(reference.state_dict(), strict=True)
        try:
            with torch.no_grad():
                got = model(x)
        except (RuntimeError, ValueError):
            got = None
        ok = got is not None and got.shape == expected.shape
        results.append(float((got - expected).abs().max() / expected.abs().max()) if ok else None)
    return results


@dataclass(frozen=True)
class Audit:
    """One row of chapter 4's audit table: a model, measured."""

    label: str  #: What the row is (e.g. ``"as published"``, ``"fix regular_depthwise"``).
    flaws: Flaws  #: The flaws still on.
    params: int  #: Parameters (a tensor used twice counts once, as in ``model.parameters()``).
    reference_params: int  #: Parameters of :class:`~xception_lib.model.Xception` with the same config.
    shapes: dict[str, tuple[int, ...] | None]  #: ``{stage or "logits": shape}`` at 299 px (``None``: failed).
    logits_at_299: bool  #: Whether a 299 px image reaches the logits.
    middle: MiddleFlowUsage  #: Middle-flow weight usage.


def audit(
    flaws: Flaws, config: XceptionConfig | None = None, *, label: str = "", reference_params: int | None = None
) -> Audit:
    """Measure a :class:`FlawedXception` with ``flaws`` against ``Xception(config)`` (default :func:`post_config`),
    on the ``meta`` device; pass ``reference_params`` when already known, to save counting them again."""
    cfg = config if config is not None else post_config()
    model = build_meta(flaws, cfg)
    shapes: dict[str, tuple[int, ...] | None] = {}
    x = torch.zeros(1, cfg.in_channels, 299, 299, device="meta")
    with eval_mode(model):
        for name, stage in [*model.stages().items(), ("logits", model.head)]:
            try:
                x = stage(x)
            except RuntimeError:
                shapes[name] = None
                break
            shapes[name] = tuple(x.shape)
    if reference_params is None:
        reference_params = sum(p.numel() for p in meta_model(cfg).parameters())
    return Audit(
        label=label or ("as published" if flaws == Flaws() else ", ".join(flaws.active()) or "all fixed"),
        flaws=flaws,
        params=sum(p.numel() for p in model.parameters()),
        reference_params=reference_params,
        shapes=shapes,
        logits_at_299=shapes.get("logits") is not None,
        middle=middle_flow_usage(model),
    )


def fix_sequence(order: Sequence[str] = FLAW_NAMES) -> list[tuple[str, Flaws]]:
    """The post's model, then one more flaw fixed at each step, in ``order``: ``[("as published", Flaws()),
    ("fix <first>", ...), ...]``; the last has no flaw left."""
    if sorted(_checked(order)) != sorted(FLAW_NAMES):
        raise ValueError(f"order must list every flaw once: expected a permutation of {FLAW_NAMES}, got {tuple(order)}")
    steps = [("as published", Flaws())]
    for name in order:
        steps.append((f"fix {name}", steps[-1][1].fix(name)))
    return steps


def audit_table(rows: Sequence[Audit], stages: Sequence[str] = ("stem", "exit_flow")) -> pandas.DataFrame:
    """The audits as a table, one row each, labelled by the flaw last fixed; print it with ``.to_string()``.

    Columns: parameters and the gap to the reference; each stage's output (height x width x channels) for a
    299 px image; whether that image reaches the logits (``299 px``); distinct middle-flow convolutions out of
    those applied (``middle``).
    """
    import pandas as pd

    return pd.DataFrame(
        {
            "params": [f"{r.params:,}" for r in rows],
            "vs Xception": [f"{r.params - r.reference_params:+,}" for r in rows],
            **{s.removesuffix("_flow"): [format_shape(r.shapes.get(s)) for r in rows] for s in stages},
            "299 px": ["yes" if r.logits_at_299 else "no" for r in rows],
            "middle": [f"{r.middle.distinct}/{r.middle.applications}" for r in rows],
        },
        index=pd.Index([r.label.removeprefix("fix ") for r in rows], name="after fixing"),
    )


def plot_fix_sequence(rows: Sequence[Audit]) -> Figure:
    """Parameters after each of :func:`fix_sequence`'s steps (``rows``, top to bottom) against Xception's: a bar is
    orange while the count differs, blue once it matches, hatched while a 299 px image cannot reach the logits."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if not rows:
        raise ValueError("expected at least one Audit row, got none")
    fig = Figure(figsize=(7.0, 1.2 + 0.3 * len(rows)), layout="constrained")
    ax = fig.subplots()
    ys = range(len(rows))
    colours = ["#9ecae1" if r.params == r.reference_params else "#fdae6b" for r in rows]
    hatches = ["" if r.logits_at_299 else "//" for r in rows]
    bars = ax.barh(ys, [r.params / 1e6 for r in rows], color=colours, hatch=hatches, edgecolor="#333333", linewidth=0.6)
    labels = [f"{r.params / 1e6:.2f} M ({r.params - r.reference_params:+,})" for r in rows]
    ax.bar_label(bars, labels=labels, fontsize=9, padding=3, bbox=dict(facecolor="white", edgecolor="none", pad=0.5))
    ax.axvline(rows[0].reference_params / 1e6, color="#333333", linestyle="--", linewidth=1.0)
    ax.set_yticks(list(ys), [r.label.removeprefix("fix ") for r in rows], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, max(r.params for r in rows) / 1e6 * 1.5)  # room for the labels
    ax.set_xlabel("parameters (millions) after fixing each flaw in turn, top to bottom", fontsize=10)
    ax.tick_params(axis="x", labelsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    keys = (("#fdae6b", "", "count differs"), ("#9ecae1", "", "count matches"), ("white", "//", "299 px fails"))
    handles = [Line2D([], [], color="#333333", linestyle="--", label="Xception, same config")]
    handles += [Patch(facecolor=colour, edgecolor="#333333", hatch=hatch, label=label) for colour, hatch, label in keys]
    fig.legend(handles=handles, fontsize=9, loc="outside lower center", ncols=4, frameon=False)
    return fig


__all__ = [
    "FLAW_NAMES", "Audit", "FlawedBlock", "FlawedSeparableConv2d", "FlawedXception", "Flaws", "LoadReport",
    "MiddleFlowUsage", "SharedMiddleFlow", "accepted_sizes", "audit", "audit_table", "bias_change_in_train_mode",
    "build_meta", "compare_state_dicts", "fix_sequence", "load_matching", "logit_checks", "matches_reference",
    "middle_flow_usage", "param_delta", "plot_fix_sequence", "post_config", "size_ranges",
]
