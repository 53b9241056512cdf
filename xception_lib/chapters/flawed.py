"""A deliberately flawed Xception, with one switch per flaw, for chapter 4.

Chapter 4 reads a public blog post that summarises the Xception paper and ships a PyTorch
model. Its code is not reproduced here; :class:`FlawedXception` is this library's own model
that makes the same *mistakes*, each behind a boolean field of the frozen dataclass
:class:`Flaws`. ``Flaws()`` switches every flaw on (the post's model: same parameter count,
same shapes, same computation), ``Flaws.none()`` switches them all off, and then the model
is, tensor for tensor, :class:`~xception_lib.model.Xception` with the same config: the same
state-dict keys and shapes, so the weights load across and the logits agree.

The flaws, in the order the chapter fixes them (:data:`FLAW_NAMES`):

``regular_depthwise``
    The "depthwise" step is a full 3x3 convolution (``groups`` left at 1), so every
    separable convolution is a regular convolution followed by a 1x1.
``shared_middle_block``
    The middle flow applies *one* block eight times: 8 blocks deep, one block of weights.
``bias_before_bn``
    Every convolution has a bias although a batch norm follows and removes it.
``bn_relu_between``
    Batch norm and ReLU between the depthwise and the pointwise step (the paper's Figure 10
    shows that no non-linearity there works best, and Xception has none).
``bn_relu_after_pointwise``
    Another batch norm and ReLU after the pointwise step, inside the separable convolution,
    before the block's own batch norm: two batch norms in a row, ReLUs in the wrong places.
``entry_block1_no_bn``
    The first entry-flow block has no batch norm after its separable convolutions (the
    other blocks do).
``shortcut_without_bn``
    The 1x1 stride-2 shortcut convolutions have no batch norm.
``stem_stride_1``
    The first stem convolution has stride 1 instead of 2.
``stem_padding``
    Both stem convolutions pad by 1 (the paper's stem has no padding: 299 -> 149 -> 147).
``fixed_size_pool``
    A 2x2 average pool with stride 1 and a flatten instead of global average pooling: the
    classifier only accepts inputs whose final feature map is exactly 2x2.
``exit_relu_before``
    In the exit flow, the ReLUs come *before* the 1536- and 2048-channel separable
    convolutions instead of after them, so the pooled features are not rectified. It
    changes neither a parameter nor a shape: only comparing outputs with a reference
    that carries the same weights finds it.

The post's model also uses PyTorch's batch-norm defaults (epsilon 1e-5) and symmetric
max-pool padding; those are the conventions of the PyTorch ports, not flaws, so the default
config is :meth:`XceptionConfig.timm_port` with the post's 100 classes (:func:`post_config`).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from xception_lib.chapters.anatomy import separable_layers
from xception_lib.complexity import conv_params, depthwise_params, separable_params
from xception_lib.config import XceptionConfig
from xception_lib.layers import MaxPool2dSame

if TYPE_CHECKING:  # matplotlib is optional: imported inside the function that draws
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Flaws:
    """Which of the post's flaws a :class:`FlawedXception` reproduces (``True``: flawed).

    The default switches every flaw on; see the module docstring for what each one does.
    """

    regular_depthwise: bool = True
    shared_middle_block: bool = True
    bias_before_bn: bool = True
    bn_relu_between: bool = True
    bn_relu_after_pointwise: bool = True
    entry_block1_no_bn: bool = True
    shortcut_without_bn: bool = True
    stem_stride_1: bool = True
    stem_padding: bool = True
    fixed_size_pool: bool = True
    exit_relu_before: bool = True

    @classmethod
    def none(cls) -> Flaws:
        """Every flaw fixed: the paper's architecture."""
        return cls(**dict.fromkeys(FLAW_NAMES, False))

    @classmethod
    def only(cls, *names: str) -> Flaws:
        """Only the named flaws, everything else fixed."""
        for name in names:
            _check_name(name)
        return dataclasses.replace(cls.none(), **dict.fromkeys(names, True))

    def fix(self, *names: str) -> Flaws:
        """A copy with the named flaws fixed."""
        for name in names:
            _check_name(name)
        return dataclasses.replace(self, **dict.fromkeys(names, False))

    def active(self) -> tuple[str, ...]:
        """Names of the flaws switched on, in :data:`FLAW_NAMES` order."""
        return tuple(name for name in FLAW_NAMES if getattr(self, name))


#: Every flaw, in the order chapter 4 fixes them.
FLAW_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Flaws))


def _check_name(name: str) -> None:
    if name not in FLAW_NAMES:
        raise ValueError(f"unknown flaw {name!r}; expected one of {FLAW_NAMES}")


def post_config(num_classes: int = 100) -> XceptionConfig:
    """The blog post's setting: the paper's widths, PyTorch's conventions, 100 classes."""
    return XceptionConfig.timm_port(num_classes=num_classes)


# ------------------------------------------------------------------ building blocks


def _bn(channels: int, config: XceptionConfig) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=config.bn_eps, momentum=config.bn_momentum)


class FlawedSeparableConv2d(nn.Module):
    """A separable convolution with the post's flaws switchable.

    With no flaw it equals :class:`~xception_lib.layers.SeparableConv2d` (same parameter
    names: ``depthwise``, ``pointwise``).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        flaws: Which flaws to reproduce (``regular_depthwise``, ``bias_before_bn``,
            ``bn_relu_between``, ``bn_relu_after_pointwise`` act here).
        config: Batch-norm settings.
    """

    def __init__(self, in_channels: int, out_channels: int, flaws: Flaws, config: XceptionConfig) -> None:
        super().__init__()
        groups = 1 if flaws.regular_depthwise else in_channels
        bias = flaws.bias_before_bn
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=groups, bias=bias)
        self.between = (
            nn.Sequential(OrderedDict(bn=_bn(in_channels, config), act=nn.ReLU())) if flaws.bn_relu_between else None
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        self.after = (
            nn.Sequential(OrderedDict(bn=_bn(out_channels, config), act=nn.ReLU()))
            if flaws.bn_relu_after_pointwise
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise(x)
        if self.between is not None:
            x = self.between(x)
        x = self.pointwise(x)
        if self.after is not None:
            x = self.after(x)
        return x


class FlawedBlock(nn.Module):
    """A residual block: ``reps`` x (ReLU -> separable conv -> BN), a max-pool, a shortcut.

    With no flaw it equals :class:`~xception_lib.model.XceptionBlock` (same names).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        reps: Number of separable convolutions.
        stride: Stride of the final max-pool (1: no pool).
        flaws: Which flaws to reproduce.
        config: Batch-norm and pooling settings.
        start_with_relu: Whether the first separable convolution is preceded by ReLU.
        grow_first: Whether the first (True) or last (False) separable convolution widens.
        with_bn: Whether a batch norm follows each separable convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        reps: int,
        stride: int,
        flaws: Flaws,
        config: XceptionConfig,
        *,
        start_with_relu: bool = True,
        grow_first: bool = True,
        with_bn: bool = True,
    ) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(reps):
            if grow_first:
                cin, cout = (in_channels if i == 0 else out_channels), out_channels
            else:
                cin, cout = in_channels, (in_channels if i < reps - 1 else out_channels)
            if i > 0 or start_with_relu:
                layers[f"act{i + 1}"] = nn.ReLU()
            layers[f"sep{i + 1}"] = FlawedSeparableConv2d(cin, cout, flaws, config)
            if with_bn:
                layers[f"bn{i + 1}"] = _bn(cout, config)
        if stride != 1:
            layers["pool"] = _max_pool(stride, config)
        self.layers = nn.Sequential(layers)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or stride != 1:
            shortcut: OrderedDict[str, nn.Module] = OrderedDict(
                conv=nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=flaws.bias_before_bn)
            )
            if not flaws.shortcut_without_bn:
                shortcut["bn"] = _bn(out_channels, config)
            self.shortcut = nn.Sequential(shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) + self.shortcut(x)


def _max_pool(stride: int, config: XceptionConfig) -> nn.Module:
    if config.pool_padding == "same":
        return MaxPool2dSame(3, stride)
    return nn.MaxPool2d(3, stride, padding=1)


class SharedMiddleFlow(nn.Module):
    """The flaw ``shared_middle_block``: one block applied ``repeats`` times.

    Args:
        block: The one block whose weights every repetition uses.
        repeats: How many times it is applied.
    """

    def __init__(self, block: nn.Module, repeats: int) -> None:
        super().__init__()
        self.block = block
        self.repeats = repeats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.repeats):
            x = self.block(x)
        return x


# ------------------------------------------------------------------ the model


class FlawedXception(nn.Module):
    """Xception with the seed blog post's flaws, each switchable.

    It has the stages of :class:`~xception_lib.model.Xception` (``stem``, ``entry_flow``,
    ``middle_flow``, ``exit_flow``, ``head``) and its ``forward_intermediates`` /
    ``forward_head``, so the same measurements run on both. Unlike ``Xception`` it does
    not check its input: finding out what it accepts is part of the audit.

    Args:
        flaws: Which flaws to reproduce (default: all of them, the post's model).
        config: Widths, classes, batch-norm and pooling conventions (default:
            :func:`post_config`). It must use the ImageNet stem, residual connections and
            depthwise separable convolutions without intermediate activation; the flaws
            are what changes those.
    """

    def __init__(self, flaws: Flaws | None = None, config: XceptionConfig | None = None) -> None:
        super().__init__()
        self.flaws = f = flaws if flaws is not None else Flaws()
        self.config = cfg = config if config is not None else post_config()
        if cfg.stem != "imagenet" or not cfg.residual or cfg.segments is not None or cfg.intermediate_activation != "none":
            raise ValueError(
                "FlawedXception starts from the paper's architecture: expected stem='imagenet', residual=True, "
                f"segments=None, intermediate_activation='none', got {cfg.stem!r}, {cfg.residual}, "
                f"{cfg.segments}, {cfg.intermediate_activation!r}"
            )
        c = cfg.channels
        s1, s2 = c(cfg.stem_channels[0]), c(cfg.stem_channels[1])
        pad = 1 if f.stem_padding else 0
        self.stem = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(cfg.in_channels, s1, 3, stride=1 if f.stem_stride_1 else 2, padding=pad, bias=f.bias_before_bn),
                bn1=_bn(s1, cfg),
                act1=nn.ReLU(),
                conv2=nn.Conv2d(s1, s2, 3, padding=pad, bias=f.bias_before_bn),
                bn2=_bn(s2, cfg),
                act2=nn.ReLU(),
            )
        )
        entry: OrderedDict[str, nn.Module] = OrderedDict()
        prev = s2
        for i, (out, stride) in enumerate(zip(cfg.entry_channels, cfg.entry_strides)):
            with_bn = not (i == 0 and f.entry_block1_no_bn)
            entry[f"block{i + 1}"] = FlawedBlock(prev, c(out), 2, stride, f, cfg, start_with_relu=i > 0, with_bn=with_bn)
            prev = c(out)
        self.entry_flow = nn.Sequential(entry)

        if f.shared_middle_block:
            self.middle_flow: nn.Module = SharedMiddleFlow(FlawedBlock(prev, prev, 3, 1, f, cfg), cfg.middle_blocks)
        else:
            self.middle_flow = nn.Sequential(
                OrderedDict((f"block{i + 1}", FlawedBlock(prev, prev, 3, 1, f, cfg)) for i in range(cfg.middle_blocks))
            )

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

        self.num_features = e2
        self.head = nn.Sequential(
            OrderedDict(
                pool=nn.AvgPool2d(2, stride=1) if f.fixed_size_pool else nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(1),
                dropout=nn.Dropout(cfg.dropout),
                fc=nn.Linear(e2, cfg.num_classes),
            )
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def stages(self) -> OrderedDict[str, nn.Module]:
        """The named stages, as in :meth:`xception_lib.model.Xception.stages`."""
        named: OrderedDict[str, nn.Module] = OrderedDict(stem=self.stem)
        for name, block in self.entry_flow.named_children():
            named[f"entry_flow.{name}"] = block
        named["middle_flow"] = self.middle_flow
        named["exit_flow"] = self.exit_flow
        return named

    def forward_intermediates(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Every named stage's output, as in :meth:`xception_lib.model.Xception.forward_intermediates`."""
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name, stage in self.stages().items():
            x = stage(x)
            out[name] = x
        return out

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> logits."""
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.entry_flow(x)
        x = self.middle_flow(x)
        x = self.exit_flow(x)
        return self.head(x)


# ------------------------------------------------------------------ closed forms


def param_delta(name: str, config: XceptionConfig | None = None) -> int:
    """How many parameters flaw ``name`` alone adds (negative: removes), from closed forms.

    Computed from the config with :mod:`xception_lib.complexity`'s formulas, never from a
    model, so a test can hold :class:`FlawedXception` to it:

    * ``regular_depthwise``: ``sum(k^2 C_in^2 - k^2 C_in)`` over the separable convolutions;
    * ``shared_middle_block``: minus ``(blocks - 1)`` blocks of three separable convolutions
      and their batch norms;
    * ``bias_before_bn``: one bias per output channel of every convolution but the classifier;
    * ``bn_relu_between`` / ``bn_relu_after_pointwise``: a batch norm (2 per channel) on the
      input / output channels of every separable convolution;
    * ``entry_block1_no_bn`` / ``shortcut_without_bn``: minus the batch norms left out;
    * the other flaws move no parameter: 0.

    Args:
        name: A name in :data:`FLAW_NAMES`.
        config: The architecture (default :func:`post_config`).
    """
    _check_name(name)
    cfg = config if config is not None else post_config()
    c = cfg.channels
    seps = separable_layers(cfg)
    shortcut_channels = [c(x) for x in cfg.entry_channels] + [c(cfg.exit_channels[0])]
    if name == "regular_depthwise":
        return sum(conv_params(cin, cin, 3) - depthwise_params(cin, 3) for _, cin, _ in seps)
    if name == "shared_middle_block":
        width = c(cfg.entry_channels[2])
        block = 3 * (separable_params(width, width, 3) + 2 * width)
        return -max(cfg.middle_blocks - 1, 0) * block
    if name == "bias_before_bn":
        stem = c(cfg.stem_channels[0]) + c(cfg.stem_channels[1])
        return stem + sum(cin + cout for _, cin, cout in seps) + sum(shortcut_channels)
    if name == "bn_relu_between":
        return sum(2 * cin for _, cin, _ in seps)
    if name == "bn_relu_after_pointwise":
        return sum(2 * cout for _, _, cout in seps)
    if name == "entry_block1_no_bn":
        return -2 * 2 * c(cfg.entry_channels[0])
    if name == "shortcut_without_bn":
        return -2 * sum(shortcut_channels)
    return 0


def count_params(model: nn.Module) -> int:
    """Distinct parameters of a model (a tensor used twice counts once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def build_meta(flaws: Flaws | None = None, config: XceptionConfig | None = None) -> FlawedXception:
    """A :class:`FlawedXception` on the ``meta`` device: free to build, shapes only."""
    with torch.device("meta"):
        return FlawedXception(flaws, config)


# ------------------------------------------------------------------ measurements


def accepted_sizes(model: nn.Module, sizes: Sequence[int]) -> list[int]:
    """The square input sizes a model runs on end to end (to logits), among ``sizes``.

    Use a ``meta``-device model (:func:`build_meta`): each try costs milliseconds.

    Args:
        model: The model under audit.
        sizes: Heights (= widths) to try.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    cin = getattr(getattr(model, "config", None), "in_channels", 3)
    ok = []
    was_training = model.training
    model.eval()
    try:
        for size in sizes:
            try:
                with torch.no_grad():
                    model(torch.zeros(1, cin, size, size, device=device))
            except (RuntimeError, ValueError):
                continue
            ok.append(size)
    finally:
        model.train(was_training)
    return ok


def size_ranges(sizes: Sequence[int]) -> str:
    """``[17, 18, 19, 32, 40] -> '17-19, 32, 40'``; ``'none'`` if empty."""
    if not sizes:
        return "none"
    parts: list[str] = []
    start = prev = sizes[0]
    for s in list(sizes[1:]) + [None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if s is not None:
            start = prev = s
    return ", ".join(parts)


@dataclass(frozen=True)
class MiddleFlowUsage:
    """How the middle flow uses its weights, measured on one forward pass.

    Attributes:
        applications: Convolutions applied in the middle flow.
        distinct: Distinct convolution modules (distinct weights) among them.
    """

    applications: int
    distinct: int


def middle_flow_usage(model: nn.Module, input_size: Sequence[int] = (1, 3, 64, 64)) -> MiddleFlowUsage:
    """Count convolution calls in ``model.middle_flow`` and how many distinct weights they use.

    Forward hooks record which module ran (nothing else) and are removed afterwards. Only
    the middle flow runs, on a tensor of the shape the entry flow produces for ``input_size``
    (read from the model's own stages), so the classifier's input-size limits do not matter.

    Args:
        model: A model with ``stem``, ``entry_flow`` and ``middle_flow``.
        input_size: ``(N, C, H, W)`` of the image input.
    """
    calls: list[int] = []
    convs = [m for m in model.get_submodule("middle_flow").modules() if isinstance(m, nn.Conv2d)]

    def hook(module: nn.Module, _inputs: object, _output: torch.Tensor) -> None:
        calls.append(id(module))

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    handles = [m.register_forward_hook(hook) for m in convs]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(*input_size, device=device)
            x = model.get_submodule("entry_flow")(model.get_submodule("stem")(x))
            model.get_submodule("middle_flow")(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return MiddleFlowUsage(applications=len(calls), distinct=len(set(calls)))


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_matching` could copy.

    Attributes:
        loaded: Tensors copied (same name and shape).
        wrong_shape: Names present in both with different shapes (left as they were).
        missing: Names only in the target (left as they were).
        unexpected: Names only in the source (ignored).
    """

    loaded: int
    wrong_shape: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """Every tensor of both sides found its counterpart."""
        return not (self.wrong_shape or self.missing or self.unexpected)


def compare_state_dicts(target: nn.Module, source: nn.Module) -> LoadReport:
    """What a transplant of ``source``'s tensors into ``target`` would load, without loading.

    Works on ``meta``-device models (only names and shapes are compared).

    Args:
        target: The model that would receive the tensors.
        source: The model that would give them.
    """
    theirs = {k: tuple(v.shape) for k, v in source.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    return LoadReport(
        loaded=sum(1 for k, v in theirs.items() if ours.get(k) == v),
        wrong_shape=tuple(k for k in theirs if k in ours and ours[k] != theirs[k]),
        missing=tuple(k for k in ours if k not in theirs),
        unexpected=tuple(k for k in theirs if k not in ours),
    )


def load_matching(target: nn.Module, source: nn.Module) -> LoadReport:
    """Copy every tensor (parameters and buffers) whose name and shape agree from ``source``.

    Args:
        target: The model to load into.
        source: The model to load from.

    Returns:
        A :class:`LoadReport` (see :func:`compare_state_dicts`); ``report.complete`` means
        a strict load would have worked.
    """
    report = compare_state_dicts(target, source)
    ours = target.state_dict()
    same = {k: v for k, v in source.state_dict().items() if k in ours and ours[k].shape == v.shape}
    target.load_state_dict(same, strict=False)
    return report


def max_logit_difference(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float | None:
    """``max |a(x) - b(x)|`` in eval mode, or ``None`` when either model rejects ``x``."""
    outputs = []
    for model in (a, b):
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                outputs.append(model(x))
        except (RuntimeError, ValueError):
            return None
        finally:
            model.train(was_training)
    if outputs[0].shape != outputs[1].shape:
        return None
    return float((outputs[0] - outputs[1]).abs().max())


def bias_change_in_train_mode(model: nn.Module, x: torch.Tensor, *, seed: int = 0) -> float:
    """How much the output moves when every convolution bias is redrawn, in training mode.

    A bias added right before a batch norm is subtracted again with the batch mean, so in
    training mode (batch statistics) redrawing those biases changes nothing but rounding.
    The model is left unchanged (its biases and running statistics are restored).

    Args:
        model: A model whose convolutions have biases (``bias_before_bn``).
        x: An input batch with more than one value per channel.
        seed: Seed of the new biases.

    Returns:
        ``max |f(x) - f'(x)| / max |f(x)|``, ``f'`` the model with new biases.
    """
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
    if not convs:
        raise ValueError("expected a model whose convolutions have biases (bias_before_bn=True), found none")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    generator = torch.Generator().manual_seed(seed)
    try:
        model.train()
        with torch.no_grad():
            before = model(x)
            for m in convs:
                assert m.bias is not None
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator).to(m.bias.device))
            after = model(x)
    finally:
        model.load_state_dict(state)
        model.train(was_training)
    return float((after - before).abs().max() / before.abs().max())


# ------------------------------------------------------------------ the audit


@dataclass(frozen=True)
class Audit:
    """One row of chapter 4's audit table: a model, measured.

    Attributes:
        label: What the row is (e.g. ``"as published"``, ``"fix regular_depthwise"``).
        flaws: The flaws still on.
        params: Distinct parameters.
        reference_params: Parameters of :class:`~xception_lib.model.Xception` with the same config.
        shapes: ``{stage: shape}`` for a 299 px input (``None`` after the stage that fails).
        logits_at_299: Whether a 299 px image reaches the logits.
        accepted: Accepted square input sizes among those tried.
        middle: Middle-flow weight usage.
    """

    label: str
    flaws: Flaws
    params: int
    reference_params: int
    shapes: dict[str, tuple[int, ...] | None]
    logits_at_299: bool
    accepted: tuple[int, ...]
    middle: MiddleFlowUsage


def audit(
    flaws: Flaws,
    config: XceptionConfig | None = None,
    *,
    label: str = "",
    sizes: Sequence[int] = (),
    reference_params: int | None = None,
) -> Audit:
    """Measure a :class:`FlawedXception` against :class:`~xception_lib.model.Xception` (shapes only).

    Everything runs on the ``meta`` device: nothing is allocated or computed (each forward
    pass still costs a fraction of a second of Python).

    Args:
        flaws: The flaws to reproduce.
        config: The architecture (default :func:`post_config`).
        label: A name for the row.
        sizes: Input sizes to try with :func:`accepted_sizes` (none by default).
        reference_params: Parameters of ``Xception(config)``, if already known.
    """
    from xception_lib.chapters.anatomy import meta_model, shape_trace

    cfg = config if config is not None else post_config()
    model = build_meta(flaws, cfg)
    trace = shape_trace(model, (1, cfg.in_channels, 299, 299))
    shapes = {s.name: s.shape for s in trace if s.name != "input"}
    return Audit(
        label=label or ("as published" if flaws == Flaws() else ", ".join(flaws.active()) or "all fixed"),
        flaws=flaws,
        params=count_params(model),
        reference_params=reference_params if reference_params is not None else count_params(meta_model(cfg)),
        shapes=shapes,
        logits_at_299=shapes.get("logits") is not None,
        accepted=tuple(accepted_sizes(model, sizes)),
        middle=middle_flow_usage(model, (1, cfg.in_channels, 64, 64)),
    )


def logit_checks(
    flaw_sets: Sequence[Flaws],
    config: XceptionConfig | None = None,
    *,
    size: int = 96,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> list[float | None]:
    """Load one random ``Xception(config)``'s weights into flawed models and compare logits.

    Each flawed model gets the reference's tensors by a strict load, so any difference
    comes from the flaws that move no parameter: ReLU placement, strides, padding, pooling.
    The reference gets non-trivial batch-norm statistics, so that a misplaced layer shows.

    Args:
        flaw_sets: One :class:`Flaws` per model to check; each must leave the state dict
            unchanged (only ``stem_stride_1``, ``stem_padding``, ``fixed_size_pool`` and
            ``exit_relu_before`` may be on).
        config: The architecture (default :func:`post_config`).
        size: Height and width of the random input image.
        seed: Seed of the weights, the batch-norm statistics and the input.
        device: Where to run.

    Returns:
        For each flaw set, ``max |flawed(x) - reference(x)| / max |reference(x)|`` in eval
        mode, or ``None`` when the flawed model rejects the input.
    """
    from xception_lib.model import Xception

    cfg = config if config is not None else post_config()
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reference = Xception(cfg)
    with torch.no_grad():
        for name, buffer in reference.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.1 * torch.randn(buffer.shape, generator=generator))
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
    reference = reference.to(device).eval()
    x = torch.randn(1, cfg.in_channels, size, size, generator=generator).to(device)
    with torch.no_grad():
        expected = reference(x)
    scale = float(expected.abs().max())
    state = reference.state_dict()
    results: list[float | None] = []
    for flaws in flaw_sets:
        model = build_meta(flaws, cfg)  # no initialisation: every tensor comes from the reference
        if not matches_reference(model):
            raise ValueError(
                f"logit_checks needs flaws that keep Xception's state dict; {flaws.active()} change it "
                "(only stem_stride_1, stem_padding, fixed_size_pool, exit_relu_before may be on)"
            )
        model = model.to_empty(device=device)
        model.load_state_dict(state, strict=True)
        model.eval()
        try:
            with torch.no_grad():
                got = model(x)
        except (RuntimeError, ValueError):
            results.append(None)
            continue
        results.append(float((got - expected).abs().max()) / scale if got.shape == expected.shape else None)
    return results


def fix_sequence(order: Sequence[str] = FLAW_NAMES) -> list[tuple[str, Flaws]]:
    """The post's model, then one more flaw fixed at each step, in ``order``.

    Returns:
        ``[("as published", Flaws()), ("fix <first>", ...), ...]``; the last has no flaw left.
    """
    for name in order:
        _check_name(name)
    if sorted(order) != sorted(FLAW_NAMES):
        raise ValueError(f"order must list every flaw once; expected a permutation of {FLAW_NAMES}, got {tuple(order)}")
    steps = [("as published", Flaws())]
    current = Flaws()
    for name in order:
        current = current.fix(name)
        steps.append((f"fix {name}", current))
    return steps


def format_audits(rows: Sequence[Audit], stages: Sequence[str] = ("stem", "exit_flow")) -> str:
    """A text table of audits: parameters (and the gap to the reference), shapes at 299 px,
    whether 299 px reaches the logits, accepted sizes (when any were tried), and distinct
    middle-flow convolutions out of those applied.

    Labels ``"fix <flaw>"`` (from :func:`fix_sequence`) are shown as ``<flaw>`` under the
    heading "after fixing"."""
    from xception_lib.chapters.anatomy import format_shape

    sizes = any(r.accepted for r in rows)
    head = f"{'after fixing':23} {'params':>10} {'vs Xception':>11} "
    head += " ".join(f"{s.replace('_flow', ''):>10}" for s in stages)
    head += f" {'299?':>4}" + (f" {'accepted sizes':>26}" if sizes else "") + f" {'mid.':>5}"
    lines = [head, "-" * len(head)]
    for r in rows:
        line = f"{r.label.removeprefix('fix '):23} {r.params:>10,} {r.params - r.reference_params:>+11,} "
        line += " ".join(f"{format_shape(r.shapes.get(s)):>10}" for s in stages)
        line += f" {'yes' if r.logits_at_299 else 'no':>4}"
        line += f" {size_ranges(list(r.accepted)):>26}" if sizes else ""
        line += f" {r.middle.distinct:>2}/{r.middle.applications}"
        lines.append(line)
    return "\n".join(lines)


def plot_fix_sequence(rows: Sequence[Audit]) -> Figure:
    """Parameters after each fix (bars), against the reference Xception's count (line).

    A bar is hatched while a 299 px image still cannot reach the logits.

    Args:
        rows: Audits of :func:`fix_sequence`'s steps, in order.
    """
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("expected at least one Audit row, got none")
    fig = Figure(figsize=(10.0, 3.6), layout="constrained")
    ax = fig.subplots()
    xs = range(len(rows))
    bars = ax.bar(
        xs,
        [r.params / 1e6 for r in rows],
        color=["#9ecae1" if r.params == r.reference_params else "#fdae6b" for r in rows],
        edgecolor="#333333",
        linewidth=0.6,
    )
    for bar, row in zip(bars, rows):
        if not row.logits_at_299:
            bar.set_hatch("//")
    ax.bar_label(bars, labels=[f"{r.params / 1e6:.2f}M" for r in rows], fontsize=7.5, padding=2)
    ax.axhline(rows[0].reference_params / 1e6, color="#333333", linestyle="--", linewidth=1.0)
    ax.set_xticks(list(xs), [r.label.removeprefix("fix ") for r in rows], fontsize=8, rotation=30, ha="right")
    ax.set_ylabel("parameters (millions)")
    ax.set_yscale("log")
    ax.margins(y=0.2)
    ax.spines[["top", "right"]].set_visible(False)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Line2D([], [], color="#333333", linestyle="--", label="Xception, same config"),
        Patch(facecolor="#fdae6b", edgecolor="#333333", label="count differs"),
        Patch(facecolor="#9ecae1", edgecolor="#333333", label="count matches"),
        Patch(facecolor="white", edgecolor="#333333", hatch="//", label="299 px fails"),
    ]
    ax.legend(handles=handles, fontsize=8, loc="upper right", frameon=False)
    return fig


def matches_reference(model: FlawedXception) -> bool:
    """Whether a flawed model's state dict has exactly the keys and shapes of ``Xception(config)``."""
    from xception_lib.chapters.anatomy import meta_model

    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ref = {k: tuple(v.shape) for k, v in meta_model(model.config).state_dict().items()}
    return ours == ref


__all__ = [
    "FLAW_NAMES",
    "Audit",
    "FlawedBlock",
    "FlawedSeparableConv2d",
    "FlawedXception",
    "Flaws",
    "LoadReport",
    "MiddleFlowUsage",
    "SharedMiddleFlow",
    "accepted_sizes",
    "audit",
    "bias_change_in_train_mode",
    "build_meta",
    "count_params",
    "fix_sequence",
    "format_audits",
    "compare_state_dicts",
    "load_matching",
    "logit_checks",
    "matches_reference",
    "max_logit_difference",
    "middle_flow_usage",
    "param_delta",
    "plot_fix_sequence",
    "post_config",
    "size_ranges",
]
