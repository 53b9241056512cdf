"""Exercises that answer back: the checks behind every chapter's closing exercises.

A reader fills in a cell tagged ``exercise`` (its placeholders are ``...``) and runs the
next cell, one call::

    xl.exercises.check("ch2.separable_params", separable_params)

which prints one of three things: that the exercise is not attempted yet (the answer still
holds the placeholder ``...``), that the answer is right, or a hint that names the likely
mistake (a bias the layer does not have, the two steps in reversed order, a size off by the
padding, ...) without giving the answer away.

One way to write a check: :func:`exercise` registers, under a name, the **solution** (a
function whose body is what the reader would write, ending in ``return <answer>``), the
**expected** value (computed from the library's models and formulas, or with PyTorch, never
typed in), an optional **run** that turns a code answer (a function the reader wrote) into a
value by calling it on fixed inputs, and a list of ``(predicate, hint)`` pairs, tried in
order on ``(value, expected)``. :func:`solution` shows a solution, collapsed until opened;
:func:`quiz` shows a chapter's questions of understanding (``xception_lib/quizzes``).
"""

from __future__ import annotations

import ast
import copy
import functools
import html
import inspect
import json
import math
import re
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

import xception_lib as xl
from xception_lib import complexity, transfer
from xception_lib.config import XceptionConfig
from xception_lib.layers import SegmentedInception, SeparableConv2d, SimplifiedInception
from xception_lib.listing import fit_source
from xception_lib.model import Xception, xception

Predicate = Callable[[Any, Any], bool]
Hint = tuple[Predicate, "str | Callable[[Any, Any], str]"]
Status = Literal["not attempted", "right", "wrong"]


@dataclass(frozen=True)
class Exercise:
    """One checked exercise.

    Attributes:
        name: ``"ch<chapter>.<what>"``, the name the chapter's check cell passes.
        solution: Returns a right answer; its body is what the reader would write.
        expected: Computes the right value (from the models, the formulas or PyTorch).
        hints: ``(predicate(value, expected), hint)`` pairs for likely mistakes, in order;
            a hint may be a function of ``(value, expected)`` returning the text.
        otherwise: The hint when no predicate matches.
        run: Turns the reader's answer into the value compared (``None``: the answer is
            the value); for code exercises it calls the reader's function on fixed inputs.
        rel_tol: Relative tolerance for floating-point values and tensors.
    """

    name: str
    solution: Callable[[], Any]
    expected: Callable[[], Any]
    hints: tuple[Hint, ...]
    otherwise: str
    run: Callable[[Any], Any] | None = None
    rel_tol: float = 1e-6


@dataclass(frozen=True)
class Verdict:
    """What a check says about an answer: ``status`` and the message printed."""

    name: str
    status: Status
    message: str

    def __str__(self) -> str:
        return self.message


EXERCISES: dict[str, Exercise] = {}


def exercise(
    name: str,
    *,
    expected: Callable[[], Any],
    hints: Sequence[Hint] = (),
    otherwise: str,
    run: Callable[[Any], Any] | None = None,
    rel_tol: float = 1e-6,
) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Register the decorated solution as exercise ``name`` (see the module docstring)."""

    def register(solution: Callable[[], Any]) -> Callable[[], Any]:
        if name in EXERCISES:
            raise ValueError(f"exercise {name!r} is registered twice")
        EXERCISES[name] = Exercise(name, solution, functools.cache(expected), tuple(hints), otherwise, run, rel_tol)
        return solution

    return register


def _get(name: str) -> Exercise:
    if name not in EXERCISES:
        raise ValueError(f"no exercise named {name!r}; the exercises are: {', '.join(sorted(EXERCISES))}")
    return EXERCISES[name]


def _placeholder() -> Any:
    return ...


def _unanswered(answer: Any) -> bool:
    """Whether ``answer`` still holds a placeholder: ``...``, or a function whose body is ``return ...``."""
    if answer is Ellipsis:
        return True
    code = getattr(answer, "__code__", None)
    if code is not None and code.co_code == _placeholder.__code__.co_code and Ellipsis in code.co_consts:
        return True
    if isinstance(answer, (tuple, list)):
        return any(_unanswered(a) for a in answer)
    if isinstance(answer, dict):
        return any(_unanswered(a) for a in answer.values())
    return False


def same(value: Any, expected: Any, rel_tol: float = 1e-6) -> bool:
    """Whether ``value`` equals ``expected``: exactly for ints, bools and strings, within
    ``rel_tol`` (of ``expected``) for floats and tensors, element by element for tuples, lists and dicts."""
    if isinstance(expected, torch.Tensor):
        return (
            isinstance(value, torch.Tensor)
            and value.shape == expected.shape
            and torch.allclose(value.double(), expected.double(), rtol=rel_tol, atol=rel_tol)
        )
    if isinstance(expected, dict):
        return (
            isinstance(value, dict)
            and value.keys() == expected.keys()
            and all(same(value[k], expected[k], rel_tol) for k in expected)
        )
    if isinstance(expected, (tuple, list)):
        return (
            isinstance(value, (tuple, list))
            and len(value) == len(expected)
            and all(same(v, e, rel_tol) for v, e in zip(value, expected, strict=True))
        )
    if isinstance(expected, float):  # relative to the expected value
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and abs(value - expected) <= rel_tol * abs(expected)
        )
    if isinstance(expected, int) and not isinstance(expected, bool):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == expected
    return bool(value == expected)


def verdict(name: str, answer: Any) -> Verdict:
    """Judge ``answer`` to exercise ``name``: not attempted, right, or wrong with a hint."""
    ex = _get(name)
    if _unanswered(answer):
        return Verdict(
            name, "not attempted", f"{name}: not attempted yet.\nReplace the ... above and run this cell again."
        )
    value: Any = answer
    if ex.run is not None:
        try:
            value = ex.run(answer)
        except Exception as error:  # the reader's code failed: say how, and try the hints on the error
            value = error
    if _unanswered(value):
        return Verdict(
            name, "not attempted", f"{name}: not attempted yet.\nReplace the ... above and run this cell again."
        )
    expected = ex.expected()
    if not isinstance(value, Exception) and same(value, expected, ex.rel_tol):
        return Verdict(name, "right", f"{name}: right.")
    for predicate, hint in ex.hints:
        try:
            matches = predicate(value, expected)
        except Exception:  # a predicate written for another kind of mistake
            matches = False
        if matches:
            text = hint(value, expected) if callable(hint) else hint
            return Verdict(name, "wrong", f"{name}: not yet. {text}")
    if isinstance(value, Exception):
        return Verdict(name, "wrong", f"{name}: not yet. Your code raised {type(value).__name__}: {value}")
    if value is None:
        return Verdict(name, "wrong", f"{name}: not yet. Your answer is None: did you forget a `return`?")
    return Verdict(name, "wrong", f"{name}: not yet. {ex.otherwise}")


def check(name: str, answer: Any) -> None:
    """Print what exercise ``name`` says about ``answer`` (the call in a chapter's check cell)."""
    print(verdict(name, answer))


# ------------------------------------------------------------------ showing solutions


@dataclass(frozen=True)
class Solution:
    """A solution's explanation and code; in a notebook, a collapsed "Solution" element."""

    name: str
    explanation: str
    code: str

    def __str__(self) -> str:
        return f"{self.explanation}\n\n{self.code}"

    def _repr_html_(self) -> str:
        return (
            f"<details><summary>Solution ({html.escape(self.name)})</summary>"
            f"<p>{html.escape(self.explanation)}</p><pre>{html.escape(self.code)}</pre></details>"
        )


def solution(name: str) -> Solution:
    """The solution of exercise ``name``: its docstring and its body without the final ``return``."""
    fn = _get(name).solution
    source = textwrap.dedent(inspect.getsource(fn))
    body = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)).body
    lines = source.splitlines()
    code = textwrap.dedent("\n".join(lines[body[1].lineno - 1 : body[-2].end_lineno]))
    return Solution(name, " ".join(inspect.getdoc(fn).split()), fit_source(code).rstrip("\n"))  # type: ignore[union-attr]


# ------------------------------------------------------------------ questions of understanding


def quiz_questions(chapter: int) -> list[dict[str, Any]]:
    """The questions of understanding of ``chapter`` (``xception_lib/quizzes/chN.json``)."""
    path = resources.files("xception_lib").joinpath(f"quizzes/ch{chapter}.json")
    if not path.is_file():
        raise ValueError(f"no questions for chapter {chapter}: expected xception_lib/quizzes/ch{chapter}.json")
    return list(json.loads(path.read_text(encoding="utf-8")))


# jupyterquiz loads MathJax from a CDN when it finds a MathJax 3 that is not yet started; the
# book's pages work offline, so that one fetch is removed from the script it writes.
_FETCH = re.compile(r"script\.src\s*=\s*'https?://[^']*';")


def quiz(chapter: int) -> None:
    """Show ``chapter``'s questions with jupyterquiz (text/html and javascript outputs that
    Jupyter, Colab and the built book render, with no network fetch)."""
    try:
        from jupyterquiz import display_quiz
    except ImportError as error:
        raise ImportError("the questions need jupyterquiz: pip install 'xception_lib[tools]'") from error
    from IPython.display import display
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        display_quiz(quiz_questions(chapter))  # answers shuffled on the page
    for output in captured.outputs:
        data = dict(output.data)
        if "application/javascript" in data:
            data["application/javascript"] = _FETCH.sub("/* offline: no download */", data["application/javascript"])
        display(data, raw=True)


# ================================================================== chapter 1


def _segmented_macs(c: int, h: int, w: int, s: int) -> int:
    return complexity.conv_macs(c, c, 1, h, w) + complexity.conv_macs(c, c, 3, h, w, groups=s)


_MAC_CASES = ((728, 19, 19, 1), (728, 19, 19, 8), (728, 19, 19, 728), (64, 7, 5, 4))


@exercise(
    "ch1.segmented_macs",
    expected=lambda: tuple(_segmented_macs(*case) for case in _MAC_CASES),
    run=lambda fn: tuple(fn(*case) for case in _MAC_CASES),
    hints=[
        (
            lambda v, e: same(v, tuple(complexity.conv_macs(c, c, 3, h, w, s) for c, h, w, s in _MAC_CASES)),
            "That is the 3x3 step alone: the module starts with a 1x1 convolution over all channels.",
        ),
        (
            lambda v, e: same(
                v, tuple(x - c * c * h * w + c * c * h * w // s for x, (c, h, w, s) in zip(e, _MAC_CASES, strict=True))
            ),
            "The 1x1 step is not segmented: only the 3x3 step is split into s groups.",
        ),
        (
            lambda v, e: v[0] == e[0] and v[1] != e[1],
            "Right for one segment, wrong for several: each 3x3 filter reads only the C/s channels of its segment.",
        ),
        (lambda v, e: v[3] != e[3] and v[:3] == e[:3], "Right for square maps only: use the height and the width."),
    ],
    otherwise="Count each step as weights times output positions: a k x k convolution over C/s input channels "
    "to C outputs has k*k*(C/s)*C weights.",
)
def _ch1_segmented_macs() -> Callable[[int, int, int, int], int]:
    """The 1x1 step applies C x C weights at every position; the 3x3 step applies 9 weights per
    (input, output) pair within a segment of C/s channels, so 9 C^2/s weights, at every position."""

    def segmented_macs(c, h, w, s):
        return (c * c + 9 * c * c // s) * h * w

    return segmented_macs


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@exercise(
    "ch1.crossover",
    expected=lambda: next(s for s in _divisors(728) if _segmented_macs(728, 1, 1, s) - 728 * 728 < 728 * 728),
    hints=[
        (
            lambda v, e: isinstance(v, (int, float)) and v <= 9,
            "At that s the 3x3 step still costs at least as much as the 1x1: compare 9 C^2/s with C^2.",
        ),
        (
            lambda v, e: isinstance(v, int) and 728 % v != 0,
            "728 channels cannot be split into that many equal segments: s must divide 728.",
        ),
        (
            lambda v, e: isinstance(v, int) and v > e,
            "A smaller number of segments already makes the 3x3 step the cheaper one.",
        ),
    ],
    otherwise="Write both MAC counts as functions of s and look for the first divisor of 728 where the 3x3 step is cheaper.",
)
def _ch1_crossover() -> int:
    """The 3x3 step costs 9 C^2 HW / s MACs and the 1x1 step C^2 HW, so the 3x3 step is cheaper
    when s > 9; the smallest divisor of 728 above 9 is the answer."""
    crossover = next(s for s in range(10, 729) if 728 % s == 0)
    return crossover


@exercise(
    "ch1.segmented_params",
    expected=lambda: sum(p.numel() for p in SegmentedInception(64, 96, segments=4).parameters()),
    hints=[
        (
            lambda v, e: v == e - 2 * 96,
            "SegmentedInception's convolutions have biases (nn.Conv2d's default): one per output channel, in both steps.",
        ),
        (
            lambda v, e: v in (e - 96,),
            "One step's biases are missing: both convolutions have one bias per output channel.",
        ),
        (
            lambda v, e: v in (e + 9 * 96 * 96 * 3 // 4, e + 9 * 96 * 96 * 3 // 4 - 2 * 96),
            "The 3x3 step is grouped: each filter reads only the channels of its own segment, not all 96.",
        ),
        (
            lambda v, e: v in (e - 9 * 96 * 24 + 9 * 96, e - 9 * 96 * 24 + 9 * 96 - 2 * 96),
            "Four segments is not depthwise: each 3x3 filter reads the 24 channels of its segment, not one.",
        ),
    ],
    otherwise="Add the two steps: the 1x1 convolution from 64 to 96 channels and the grouped 3x3 convolution, "
    "each with its weights and biases.",
)
def _ch1_segmented_params() -> int:
    """1x1 step: 64 x 96 weights and 96 biases. 3x3 step with 4 segments: each of the 96 filters
    reads 96/4 = 24 channels, so 9 x 24 x 96 weights, and 96 biases."""
    segmented_params = (64 * 96 + 96) + (9 * 24 * 96 + 96)
    return segmented_params


def _simplified_case() -> tuple[SimplifiedInception, torch.Tensor]:
    with torch.random.fork_rng():
        torch.manual_seed(6)
        return SimplifiedInception(6, 4, towers=3), torch.randn(2, 6, 5, 5)


def _rewritten_by(fn: Callable[[SimplifiedInception], nn.Module]) -> torch.Tensor:
    simplified, x = _simplified_case()
    with torch.no_grad():
        return fn(simplified)(x)


def _without_biases(simplified: SimplifiedInception) -> nn.Module:
    segmented = SegmentedInception.from_simplified(simplified)
    with torch.no_grad():
        segmented.pointwise.bias.zero_()  # type: ignore[union-attr]
        segmented.spatial.bias.zero_()  # type: ignore[union-attr]
    return segmented


@exercise(
    "ch1.rewrite",
    expected=lambda: _rewritten_by(lambda simplified: simplified),
    run=_rewritten_by,
    hints=[
        (
            lambda v, e: v.shape != e.shape,
            "The output must have towers x tower_channels channels: one segment per tower, in the towers' order.",
        ),
        (
            lambda v, e: same(v, _rewritten_by(_without_biases), 1e-5),
            "The weights are right; copy the towers' biases too, in both steps.",
        ),
        (
            lambda v, e: isinstance(v, RuntimeError) and "size" in str(v),
            "A grouped 3x3 convolution with s groups has weights of shape (C, C / s, 3, 3): use one segment per tower.",
        ),
    ],
    otherwise="Stack the towers' 1x1 weights and biases into one 1x1 convolution, and their 3x3 weights and "
    "biases into one grouped convolution with one group per tower, keeping the towers' order.",
    rel_tol=1e-5,
)
def _ch1_rewrite() -> Callable[[SimplifiedInception], SegmentedInception]:
    """Tower t's 1x1 filters become output channels t*k ... t*k + k - 1 of one 1x1 convolution; its 3x3
    filters become group t of one grouped convolution, which reads exactly those channels. Concatenating
    along the first (output) dimension does both."""

    def rewrite(simplified):
        first = [tower[0] for tower in simplified.towers]  # the 1x1 convolutions
        second = [tower[2] for tower in simplified.towers]  # the 3x3 convolutions
        width = sum(conv.out_channels for conv in first)
        segmented = xl.SegmentedInception(first[0].in_channels, width, segments=len(first))
        with torch.no_grad():
            segmented.pointwise.weight.copy_(torch.cat([c.weight for c in first]))
            segmented.pointwise.bias.copy_(torch.cat([c.bias for c in first]))
            segmented.spatial.weight.copy_(torch.cat([c.weight for c in second]))
            segmented.spatial.bias.copy_(torch.cat([c.bias for c in second]))
        return segmented

    return rewrite


# ================================================================== chapter 2


@exercise(
    "ch2.separable_params",
    expected=lambda: sum(p.numel() for p in SeparableConv2d(728, 1024).parameters()),
    hints=[
        (
            lambda v, e: v in (e + 1024, e + 1024 + 728),
            "SeparableConv2d has no biases (a batch norm follows it in Xception).",
        ),
        (
            lambda v, e: v == 9 * 728 * 1024,
            "That is a regular 3x3 convolution's count: the separable one splits it into two steps.",
        ),
        (
            lambda v, e: v == 9 * 728 * 728 + 728 * 1024,
            "The depthwise step has one 3x3 filter per channel, each reading one channel, not all 728.",
        ),
        (lambda v, e: v in (728 * 1024, 9 * 728), "That is only one of the two steps."),
        (lambda v, e: v == 9 * 1024 + 728 * 1024, "The depthwise step comes first: it filters the 728 input channels."),
    ],
    otherwise="Add the depthwise step (one k x k filter per input channel) and the pointwise step (a 1x1 convolution).",
)
def _ch2_separable_params() -> int:
    """Depthwise: one 3x3 filter for each of the 728 input channels. Pointwise: one weight for each
    (input, output) pair. No biases."""
    depthwise = 9 * 728
    pointwise = 728 * 1024
    separable_params = depthwise + pointwise
    return separable_params


def _strided_macs() -> int:
    with torch.no_grad():
        _, _, h, w = SeparableConv2d(728, 1024, stride=2)(torch.zeros(1, 728, 19, 19)).shape
    return complexity.separable_macs(728, 1024, 3, h, w)


@exercise(
    "ch2.strided_macs",
    expected=_strided_macs,
    hints=[
        (
            lambda v, e: v == complexity.separable_macs(728, 1024, 3, 19, 19),
            "That counts a 19x19 output: with stride 2 the layer computes fewer output positions.",
        ),
        (
            lambda v, e: v == complexity.separable_macs(728, 1024, 3, 9, 9),
            "The output size is off by the padding: the depthwise step pads one pixel on each side before striding.",
        ),
        (
            lambda v, e: v == complexity.separable_params(728, 1024, 3),
            "That is the parameter count: each weight is used once per output position.",
        ),
        (lambda v, e: v == complexity.conv_macs(728, 1024, 3, 10, 10), "That is a regular convolution's count."),
    ],
    otherwise="MACs are each step's weights times its output positions; work out the output size first.",
)
def _ch2_strided_macs() -> int:
    """The depthwise step pads 1 pixel and strides by 2: (19 + 2 - 3) // 2 + 1 = 10, so the output is
    10 x 10 and both steps run at 100 positions."""
    side = (19 + 2 * 1 - 3) // 2 + 1
    strided_macs = (9 * 728 + 728 * 1024) * side * side
    return strided_macs


def _separable_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(2, 8, 7, 7, generator=g),
        torch.randn(8, 1, 3, 3, generator=g),
        torch.randn(8, 8, 1, 1, generator=g),
    )


def _separable_reference() -> torch.Tensor:
    x, dw, pw = _separable_case()
    layer = SeparableConv2d(8, 8)
    with torch.no_grad():
        layer.depthwise.weight.copy_(dw)
        layer.pointwise.weight.copy_(pw)
        return layer(x)


@exercise(
    "ch2.separable_forward",
    expected=_separable_reference,
    run=lambda fn: fn(*_separable_case()),
    hints=[
        (
            lambda v, e: same(
                v,
                F.conv2d(
                    F.conv2d(_separable_case()[0], _separable_case()[2]), _separable_case()[1], padding=1, groups=8
                ),
                1e-5,
            ),
            "You applied the pointwise step first: Xception's separable convolution filters each channel first, then mixes them.",
        ),
        (
            lambda v, e: v.shape[-1] == e.shape[-1] - 2,
            "The output is 2 pixels smaller than the input: the depthwise step needs padding=1.",
        ),
        (
            lambda v, e: isinstance(v, RuntimeError) and "channels" in str(v),
            "A depthwise weight of shape (C, 1, k, k) needs groups=C: each filter reads a single channel.",
        ),
        (
            lambda v, e: (v >= 0).all() and not (e >= 0).all(),
            "There is no non-linearity between or after the two steps.",
        ),
    ],
    otherwise="Use F.conv2d twice: depthwise (groups = channels, padding 1), then pointwise.",
    rel_tol=1e-5,
)
def _ch2_separable_forward() -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """A depthwise step is a convolution with one group per channel; the pointwise step is a 1x1
    convolution over all channels. No bias, no activation in between."""

    def separable(x, depthwise, pointwise):
        y = F.conv2d(x, depthwise, padding=1, groups=x.shape[1])
        return F.conv2d(y, pointwise)

    return separable


# ================================================================== chapter 3


@functools.cache
def _paper_xception() -> Xception:
    """The paper's Xception, built once; the checks read it and never change it."""
    return xception()


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@exercise(
    "ch3.middle_block_params",
    expected=lambda: _params(_paper_xception().middle_flow[0]),
    hints=[
        (
            lambda v, e: v == 3 * complexity.separable_params(728, 728, 3),
            "Each separable convolution is followed by a batch norm, which has a scale and a shift per channel.",
        ),
        (
            lambda v, e: v == e + 3 * 2 * 728,
            "A batch norm's running mean and variance are buffers, not parameters: only its scale and shift are learnt.",
        ),
        (lambda v, e: v == 8 * e, "That is the whole middle flow: the question asks for one of its eight blocks."),
        (
            lambda v, e: v == 3 * (9 * 728 * 728 + 2 * 728),
            "That counts regular 3x3 convolutions: the block's are separable.",
        ),
        (
            lambda v, e: v in (e + 728 * 728, e + 728 * 728 + 2 * 728),
            "A middle-flow block's shortcut is the identity: no 1x1 convolution.",
        ),
    ],
    otherwise="A middle-flow block is three times (separable convolution 728 -> 728, batch norm).",
)
def _ch3_middle_block_params() -> int:
    """Each separable convolution has 9 x 728 depthwise and 728 x 728 pointwise weights; each batch
    norm a scale and a shift per channel; the shortcut is the identity."""
    middle_block_params = 3 * (9 * 728 + 728 * 728 + 2 * 728)
    return middle_block_params


_STAGES = ("stem", "entry_flow.block1", "entry_flow.block2", "entry_flow.block3", "middle_flow", "exit_flow")


def _sizes_224() -> dict[str, int]:
    narrow = xception(width_multiplier=0.125).eval()  # the sizes do not depend on the width
    with torch.no_grad():
        out = narrow.forward_intermediates(torch.zeros(1, 3, 224, 224))
    return {name: int(out[name].shape[-1]) for name in _STAGES}


def _first_wrong(v: dict[str, int], e: dict[str, int]) -> str | None:
    return next((k for k in _STAGES if v.get(k) != e[k]), None)


@exercise(
    "ch3.sizes_224",
    expected=_sizes_224,
    hints=[
        (lambda v, e: set(v) != set(_STAGES), lambda v, e: f"Give one size for each of {', '.join(_STAGES)}."),
        (
            lambda v, e: _first_wrong(v, e) == "stem" and v["stem"] == e["stem"] + 2,
            "Both stem convolutions are unpadded: the second one also removes a pixel on each side.",
        ),
        (
            lambda v, e: _first_wrong(v, e) == "stem",
            "The first stem convolution has stride 2 and no padding: (n - 3) // 2 + 1.",
        ),
        (
            lambda v, e: abs(v[_first_wrong(v, e)] - e[_first_wrong(v, e)]) == 1,
            lambda v, e: (
                f"Off by one at {_first_wrong(v, e)}: Keras's max-pools pad 'same', so a stride-2 pool gives ceil(n / 2)."
            ),
        ),
    ],
    otherwise="Follow the image stage by stage; the first size that differs is where to look again.",
)
def _ch3_sizes_224() -> dict[str, int]:
    """Stem: (224 - 3) // 2 + 1 = 111, then 111 - 2 = 109. Each stride-2 'same' max-pool gives
    ceil(n / 2): 55, 28, 14; the middle flow keeps 14; the exit block halves it to 7."""
    import math

    stem = (224 - 3) // 2 + 1 - 2
    entry1 = math.ceil(stem / 2)
    entry2 = math.ceil(entry1 / 2)
    entry3 = math.ceil(entry2 / 2)
    sizes_224 = {
        "stem": stem,
        "entry_flow.block1": entry1,
        "entry_flow.block2": entry2,
        "entry_flow.block3": entry3,
        "middle_flow": entry3,
        "exit_flow": math.ceil(entry3 / 2),
    }
    return sizes_224


def _separables(model: nn.Module) -> list[SeparableConv2d]:
    return [m for m in model.modules() if isinstance(m, SeparableConv2d)]


def _regular_params(weights: Callable[[int, int], int] = lambda c_in, c_out: 9 * c_in * c_out) -> int:
    """Xception's parameters with every separable convolution replaced by ``weights(c_in, c_out)``."""
    model = _paper_xception()
    seps = _separables(model)
    return _params(model) + sum(weights(m.depthwise.in_channels, m.pointwise.out_channels) - _params(m) for m in seps)


@exercise(
    "ch3.regular_params",
    expected=_regular_params,
    hints=[
        (
            lambda v, e: (
                v
                == _regular_params()
                - _params(_paper_xception())
                + sum(_params(m) for m in _separables(_paper_xception()))
            ),
            "That counts the replaced convolutions only: the stem, the shortcuts, the batch norms and the classifier stay.",
        ),
        (
            lambda v, e: v == e + sum(_params(m) for m in _separables(_paper_xception())),
            "You added the regular convolutions but kept the separable ones: replace, do not add.",
        ),
        (
            lambda v, e: v in (_regular_params(lambda i, o: 9 * i * i), _regular_params(lambda i, o: 9 * o * o)),
            "Each regular convolution maps its layer's input width to its output width: use both widths.",
        ),
    ],
    otherwise="Start from the model's parameter count and, for each separable convolution, swap its count for "
    "k*k*C_in*C_out.",
)
def _ch3_regular_params() -> int:
    """For each separable convolution, replace 9 C_in + C_in C_out by 9 C_in C_out; everything else stays."""
    model = xl.xception()
    regular_params = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, xl.SeparableConv2d):
            c_in, c_out = m.depthwise.in_channels, m.pointwise.out_channels
            regular_params += 9 * c_in * c_out - (9 * c_in + c_in * c_out)
    return regular_params


# ================================================================== chapter 4


@exercise(
    "ch4.shared_middle_params",
    expected=lambda: _params(_paper_xception().middle_flow) - _params(_paper_xception().middle_flow[0]),
    hints=[
        (lambda v, e: v == 8 * e // 7, "One block's weights remain: the model loses seven blocks' worth, not eight."),
        (
            lambda v, e: v == 7 * 3 * complexity.separable_params(728, 728, 3),
            "Each separable convolution's batch norm (scale and shift per channel) is lost with it.",
        ),
        (
            lambda v, e: v == _params(_paper_xception()) - e,
            "That is the flawed model's count: the question asks how many fewer.",
        ),
    ],
    otherwise="Count one middle-flow block's parameters and how many distinct blocks the flawed model is missing.",
)
def _ch4_shared_middle_params() -> int:
    """Eight calls of one block keep one block's weights and lose the other seven; a block holds three
    separable 728 -> 728 convolutions with their batch norms."""
    block = 3 * (9 * 728 + 728 * 728 + 2 * 728)
    shared_middle_params = 7 * block
    return shared_middle_params


class _Twice(nn.Module):
    """A module that holds one layer under two names (the flaw ``[block] * 8`` builds)."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.Linear(3, 3)
        self.first, self.second = layer, layer


def _sharing_models() -> list[nn.Module]:
    block = nn.Linear(4, 4)
    tied = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5))
    tied[1].weight = tied[0].weight
    return [
        nn.Sequential(block, nn.ReLU(), block),
        nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)),
        _Twice(),
        tied,
        SeparableConv2d(4, 4),
    ]


@exercise(
    "ch4.shares_parameters",
    expected=lambda: (True, False, True, True, False),
    run=lambda fn: tuple(bool(fn(m)) for m in _sharing_models()),
    hints=[
        (
            lambda v, e: not any(v),
            "named_modules() and parameters() list each object once by default: ask for duplicates (remove_duplicate=False).",
        ),
        (
            lambda v, e: v[3] is False and v[0],
            "A parameter can be shared by two different modules (tied weights): compare parameters, not modules.",
        ),
        (
            lambda v, e: v[1] or v[4],
            "Modules of the same shape are not shared: compare identities (id(p) or `is`), not values or shapes.",
        ),
    ],
    otherwise="Collect, for every parameter tensor, the names of the modules that hold it.",
)
def _ch4_shares_parameters() -> Callable[[nn.Module], bool]:
    """Walk the modules without removing duplicates and record which names hold each parameter
    object; a parameter held under two names is shared."""

    def shares_parameters(model):
        owners = {}  # id of a parameter -> names of the modules that hold it
        for name, module in model.named_modules(remove_duplicate=False):
            for p in module.parameters(recurse=False):
                owners.setdefault(id(p), set()).add(name)
        return any(len(names) > 1 for names in owners.values())

    return shares_parameters


def _smallest_input() -> int:
    stem = _paper_xception().stem.eval()
    for n in range(1, 64):
        try:
            with torch.no_grad():
                stem(torch.zeros(1, 3, n, n))
        except (RuntimeError, ValueError):
            continue
        return n
    raise AssertionError("the stem accepts no input below 64 pixels")


@exercise(
    "ch4.smallest_input",
    expected=_smallest_input,
    hints=[
        (
            lambda v, e: v == 3,
            "After the first convolution the second unpadded 3x3 convolution needs at least 3 pixels too.",
        ),
        (
            lambda v, e: v in (5, 6),
            "The first convolution has stride 2: (n - 3) // 2 + 1 must leave enough for the second.",
        ),
        (lambda v, e: v == 299, "299 is what the paper uses, not the smallest size the network can run."),
        (lambda v, e: v > e, "A smaller image still leaves at least one pixel after the two stem convolutions."),
    ],
    otherwise="Each unpadded 3x3 convolution needs an input of at least 3 pixels; work backwards through the stem.",
)
def _ch4_smallest_input() -> int:
    """The second stem convolution needs 3 pixels, so the first must output 3: (n - 3) // 2 + 1 >= 3,
    i.e. n >= 7. The global pooling after the exit flow accepts any size that remains."""
    smallest_input = next(n for n in range(1, 300) if (n - 3) // 2 + 1 >= 3)
    return smallest_input


# ================================================================== chapter 5


def _tiny_net() -> nn.Module:
    with torch.random.fork_rng():  # the reader's random state stays as it was
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1, bias=False),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 3),
        )


def _run_train_step(step: Callable[..., Any]) -> dict[str, Any]:
    """Two steps of ``step(model, images, labels, optimizer)`` on a tiny network; the losses and weights."""
    model = _tiny_net().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
    results = [step(model, images, labels, optimizer) for _ in range(2)]
    losses = tuple(float(r.detach()) if isinstance(r, torch.Tensor) else float(r) for r in results)
    return {"losses": losses, "weights": torch.cat([p.detach().flatten() for p in model.parameters()])}


def _reference_step(*, zero_grad: bool = True, update: bool = True, loss_after: bool = False) -> Callable[..., float]:
    def step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
        if zero_grad:
            optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        if update:
            optimizer.step()
        if loss_after:
            loss = F.cross_entropy(model(images), labels)
        return loss.item()

    return step


@exercise(
    "ch5.train_step",
    expected=lambda: _run_train_step(_reference_step()),
    run=_run_train_step,
    hints=[
        (
            lambda v, e: same(v["weights"], _run_train_step(_reference_step(update=False))["weights"]),
            "The weights did not change: after backward(), the optimiser has to take its step.",
        ),
        (
            lambda v, e: same(v["weights"], _run_train_step(_reference_step(zero_grad=False))["weights"], 1e-5),
            "The first step's gradients were added to the second's: zero the gradients in every step.",
        ),
        (
            lambda v, e: same(v["losses"], _run_train_step(_reference_step(loss_after=True))["losses"], 1e-5),
            "Return the loss of the forward pass that the step used, not one computed after the update.",
        ),
        (
            lambda v, e: same(v["weights"], e["weights"], 1e-5),
            "The weights are right but not the loss returned: return the loss (a number) the gradients came from.",
        ),
    ],
    otherwise="One step: zero the gradients, forward, cross-entropy loss, backward, optimiser step; return the loss.",
    rel_tol=1e-5,
)
def _ch5_train_step() -> Callable[..., float]:
    """Gradients accumulate in .grad until zeroed, so zero them first; the loss returned is the one
    the gradients came from."""

    def train_step(model, images, labels, optimizer):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    return train_step


def _logits_case() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(16, 10, generator=g) * 3, torch.randint(0, 10, (16,), generator=g)


def _smoothed_by(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor], eps: float = 0.1) -> torch.Tensor:
    logits, labels = _logits_case()
    return torch.as_tensor(fn(logits, labels, eps)).float()


def _smoothing_k_minus_1(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    k = logits.shape[1]
    target = torch.full_like(logits, eps / (k - 1)).scatter(1, labels[:, None], 1 - eps)
    return -(target * logits.log_softmax(1)).sum(1).mean()


@exercise(
    "ch5.label_smoothing",
    expected=lambda: _smoothed_by(lambda x, y, eps: F.cross_entropy(x, y, label_smoothing=eps)),
    run=_smoothed_by,
    hints=[
        (
            lambda v, e: same(v, _smoothed_by(_smoothing_k_minus_1), 1e-5),
            "PyTorch spreads eps over all K classes, the true one included, not over the K - 1 others.",
        ),
        (
            lambda v, e: same(v, _smoothed_by(lambda x, y, eps: F.cross_entropy(x, y)), 1e-5),
            "That is the loss without smoothing.",
        ),
        (lambda v, e: v.item() < 0 or v.item() > 50, "Use the log of the softmax (log_softmax), and the minus sign."),
        (
            lambda v, e: math.isclose(v.item(), e.item() * 16, rel_tol=1e-4),
            "Average the loss over the batch, do not sum it.",
        ),
    ],
    otherwise="The target is (1 - eps) on the true class plus eps / K on every class; the loss is minus the "
    "target-weighted sum of log-probabilities, averaged over the batch.",
    rel_tol=1e-5,
)
def _ch5_label_smoothing() -> Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]:
    """The smoothed target puts 1 - eps + eps / K on the true class and eps / K on each of the others."""

    def smoothed_loss(logits, labels, eps):
        k = logits.shape[1]
        target = torch.full_like(logits, eps / k)
        target[torch.arange(len(labels)), labels] += 1 - eps
        return -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()

    return smoothed_loss


def _crop_case() -> torch.Tensor:
    return torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32) + 1


_OFFSETS = ((0, 0), (8, 8), (1, 6), (5, 2))


def _crops_by(fn: Callable[[torch.Tensor, int, int], torch.Tensor]) -> torch.Tensor:
    return torch.stack([fn(_crop_case(), dy, dx) for dy, dx in _OFFSETS])


@exercise(
    "ch5.pad_crop",
    expected=lambda: _crops_by(lambda x, dy, dx: F.pad(x, (4, 4, 4, 4))[..., dy : dy + 32, dx : dx + 32]),
    run=_crops_by,
    hints=[
        (
            lambda v, e: same(v, _crops_by(lambda x, dy, dx: x.roll((4 - dy, 4 - dx), dims=(2, 3)))),
            "That wraps the pixels around (torch.roll): the loader pads with zeros, so no scene edge reappears on the other side.",
        ),
        (
            lambda v, e: same(v, _crops_by(lambda x, dy, dx: F.pad(x, (4, 4, 4, 4))[..., dx : dx + 32, dy : dy + 32])),
            "Rows and columns are swapped: dy moves the window down (dim 2), dx right (dim 3).",
        ),
        (lambda v, e: v.shape != e.shape, "Each crop must be N x C x 32 x 32, the size of the original images."),
        (
            lambda v, e: same(
                v, _crops_by(lambda x, dy, dx: F.pad(x, (4, 4, 4, 4), mode="reflect")[..., dy : dy + 32, dx : dx + 32])
            ),
            "Pad with zeros, not by reflecting the image.",
        ),
    ],
    otherwise="Pad 4 zero pixels on every side (40 x 40), then take the 32 x 32 window whose top-left corner is (dy, dx).",
)
def _ch5_pad_crop() -> Callable[[torch.Tensor, int, int], torch.Tensor]:
    """Zero padding of 4 pixels makes a 40 x 40 image; the window starts dy rows down and dx columns right."""

    def pad_crop(images, dy, dx):
        padded = F.pad(images, (4, 4, 4, 4))  # N x C x 40 x 40
        return padded[:, :, dy : dy + 32, dx : dx + 32]

    return pad_crop


# ================================================================== chapter 6


@exercise(
    "ch6.spatial_params",
    expected=lambda: SeparableConv2d(256, 256, segments=4).depthwise.weight.numel(),
    hints=[
        (
            lambda v, e: v == 9 * 256 * 256,
            "That is one segment (a regular convolution): with 4 segments each filter reads 256 / 4 channels.",
        ),
        (lambda v, e: v == 9 * 256 * 4, "Each filter reads the 64 channels of its segment, not 4."),
        (lambda v, e: v == e + 256 * 256, "Only the spatial step: leave out the pointwise 1x1 convolution."),
        (lambda v, e: v == 9 * 256, "That is the depthwise end (256 segments)."),
    ],
    otherwise="A grouped k x k convolution from C to C channels with s groups has k*k*(C/s)*C weights.",
)
def _ch6_spatial_params() -> int:
    """Each of the 256 output channels has a 3 x 3 filter over the 256 / 4 = 64 channels of its segment."""
    spatial_params = 9 * (256 // 4) * 256
    return spatial_params


def _max_segments() -> int:
    def valid(s: int) -> bool:
        try:
            XceptionConfig.cifar(width_multiplier=0.5, segments=s)
        except ValueError:
            return False
        return True

    return max(s for s in range(1, 2049) if valid(s))


@exercise(
    "ch6.max_segments",
    expected=_max_segments,
    hints=[
        (lambda v, e: v == 64, "That is the limit at full width: at half width the stem's output is narrower."),
        (
            lambda v, e: isinstance(v, int) and v > e,
            "That does not divide every separable convolution's input channels (the first one reads the stem's output).",
        ),
        (lambda v, e: isinstance(v, int) and v < e, "A larger number of segments still divides every input width."),
    ],
    otherwise="The number of segments must divide the input channels of every separable convolution of the configuration.",
)
def _ch6_max_segments() -> int:
    """segments must divide every separable convolution's input width: the answer is their greatest common
    divisor. At half width the smallest is the stem's 32 channels, read by the first separable convolution,
    and every other width is a multiple of it. With a fixed number of channels per segment instead (say 8),
    each layer would have C/8 groups: the first layer would no longer limit the spectrum, and every layer's
    feature spaces would have the same depth, as ResNeXt's fixed group width does."""
    import math

    config = xl.XceptionConfig.cifar(width_multiplier=0.5)
    max_segments = math.gcd(*config.separable_in_channels())
    return max_segments


@exercise(
    "ch6.seeds",
    expected=lambda: math.ceil(2 * (2 * 0.15 / 0.2) ** 2),
    hints=[
        (
            lambda v, e: v == math.ceil((2 * 0.15 / 0.2) ** 2),
            "The difference of two means has the variance of both: its standard error is sigma * sqrt(2 / n), not sigma / sqrt(n).",
        ),
        (
            lambda v, e: v == math.floor(2 * (2 * 0.15 / 0.2) ** 2),
            "Round up: a fractional number of seeds is not enough.",
        ),
        (
            lambda v, e: v == math.ceil(2 * (0.15 / 0.2) ** 2),
            "The difference must stand two standard errors clear, not one.",
        ),
    ],
    otherwise="Solve 0.2 >= 2 * 0.15 * sqrt(2 / n) for the smallest whole n.",
)
def _ch6_seeds() -> int:
    """The difference of two means over n seeds has standard error sigma sqrt(2/n); require
    0.2 >= 2 x 0.15 x sqrt(2/n) and round up."""
    import math

    seeds = math.ceil(2 * (2 * 0.15 / 0.2) ** 2)
    return seeds


# ================================================================== chapter 7


def _cam_case() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(16, 5, 6, generator=g).relu(), torch.randn(16, 5, 6, generator=g)


def _cam_by(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    return torch.as_tensor(fn(*_cam_case())).float()


@exercise(
    "ch7.grad_cam",
    expected=lambda: _cam_by(lambda a, g: (g.mean(dim=(1, 2))[:, None, None] * a).sum(0).relu()),
    run=_cam_by,
    hints=[
        (
            lambda v, e: v.shape != e.shape,
            lambda v, e: f"The map has shape {tuple(v.shape)}: sum the weighted channels into one H x W map.",
        ),
        (
            lambda v, e: same(v, _cam_by(lambda a, g: (g.mean(dim=(1, 2))[:, None, None] * a).sum(0)), 1e-5),
            "Grad-CAM keeps only positive evidence: a ReLU on the weighted sum.",
        ),
        (lambda v, e: same(v, e * 30, 1e-5), "Average the gradients over the positions (a mean), do not sum them."),
        (
            lambda v, e: same(v, _cam_by(lambda a, g: (g * a).sum(0).relu()), 1e-5),
            "Each channel gets one weight, the average of its gradient over all positions, not a weight per pixel.",
        ),
    ],
    otherwise="Weight each channel by the mean of its gradient, add the weighted channels, keep the positive part.",
    rel_tol=1e-5,
)
def _ch7_grad_cam() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """One weight per channel (its gradient averaged over positions), a weighted sum of the activation
    maps, then a ReLU (Selvaraju et al., 2017, equations 1 and 2)."""

    def grad_cam(activations, gradients):
        weights = gradients.mean(dim=(1, 2))  # C
        cam = (weights[:, None, None] * activations).sum(dim=0)  # H x W
        return cam.relu()

    return grad_cam


def _dead_case() -> torch.Tensor:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 8, 5, 5, generator=g).relu()
    x[:, [1, 6]] = 0  # silent on every image
    x[0, 3] = 0  # silent on one image only
    return x


@exercise(
    "ch7.dead_channels",
    expected=lambda: (_dead_case() == 0).all(dim=3).all(dim=2).all(dim=0),
    run=lambda fn: torch.as_tensor(fn(_dead_case())),
    hints=[
        (
            lambda v, e: v.shape != e.shape,
            lambda v, e: f"One value per channel ({e.numel()}): reduce over images, height and width.",
        ),
        (
            lambda v, e: v.tolist() == (_dead_case() == 0).any(dim=3).any(dim=2).any(dim=0).tolist(),
            "A channel is dead when it is zero everywhere, not when it has some zeros.",
        ),
        (
            lambda v, e: v.tolist() == (_dead_case() == 0).all(dim=3).all(dim=2).any(dim=0).tolist(),
            "Dead means silent on every image, not on one of them.",
        ),
    ],
    otherwise="Return a boolean per channel: True when the channel is zero for every image and every position.",
)
def _ch7_dead_channels() -> Callable[[torch.Tensor], torch.Tensor]:
    """A channel is dead when every value of it, on every image, is zero: `all` over images, rows and columns."""

    def dead_channels(activations):
        return (activations == 0).all(dim=3).all(dim=2).all(dim=0)  # C booleans

    return dead_channels


def _first_depthwise_case() -> tuple[SeparableConv2d, torch.Tensor]:
    with torch.random.fork_rng():
        torch.manual_seed(5)
        return SeparableConv2d(6, 4), torch.randn(1, 6, 9, 9)


def _channel_by(fn: Callable[[SeparableConv2d, torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
    layer, x = _first_depthwise_case()
    with torch.no_grad():
        outs = [torch.as_tensor(fn(layer, x, c)) for c in (0, 2, 5)]
    if any(o.numel() != 81 for o in outs):
        return outs[0]  # a map of the wrong size: the hints say so
    return torch.stack([o.reshape(1, 9, 9) for o in outs])


@exercise(
    "ch7.depthwise_channel",
    expected=lambda: _channel_by(lambda layer, x, c: layer.depthwise(x)[:, c]),
    run=_channel_by,
    hints=[
        (lambda v, e: v.shape != e.shape, "Keep the map's size: padding=1 for a 3x3 kernel."),
        (
            lambda v, e: same(v, _channel_by(lambda layer, x, c: layer(x)[:, c % 4]), 1e-5),
            "That is the whole layer's output: the depthwise step alone comes before the pointwise mixing.",
        ),
        (
            lambda v, e: same(
                v,
                _channel_by(lambda layer, x, c: F.conv2d(x[:, :1], layer.depthwise.weight[c : c + 1], padding=1)),
                1e-5,
            ),
            "Filter channel c of the input, not the first one: a depthwise filter reads its own channel only.",
        ),
    ],
    otherwise="Convolve input channel c alone with the depthwise filter c (padding 1).",
    rel_tol=1e-5,
)
def _ch7_depthwise_channel() -> Callable[[SeparableConv2d, torch.Tensor, int], torch.Tensor]:
    """Output channel c of the depthwise step reads input channel c only, with filter c: one ordinary
    single-channel convolution."""

    def depthwise_channel(layer, x, c):
        filter_c = layer.depthwise.weight[c : c + 1]  # 1 x 1 x 3 x 3
        return F.conv2d(x[:, c : c + 1], filter_c, padding=1)[:, 0]  # N x H x W

    return depthwise_channel


# ================================================================== chapter 8


def _intensity(macs: float, elements: float) -> float:
    return macs / (4 * elements)


@exercise(
    "ch8.depthwise_intensity",
    expected=lambda: _intensity(
        complexity.depthwise_macs(728, 3, 19, 19), 2 * 728 * 19 * 19 + complexity.depthwise_params(728, 3)
    ),
    hints=[
        (lambda v, e: math.isclose(v, 9 / 8, rel_tol=1e-4), "Close, but the weights are bytes to read too."),
        (lambda v, e: math.isclose(v, 2 * e, rel_tol=1e-3), "The chapter counts MACs per byte, not FLOPs (2 per MAC)."),
        (lambda v, e: math.isclose(v, 4 * e, rel_tol=1e-3), "Count bytes, not elements: a float32 value is 4 bytes."),
        (
            lambda v, e: any(math.isclose(v, 9 * 361 / (4 * n), rel_tol=1e-3) for n in (361 + 9, 361)),
            "The output has to be written as well as the input read.",
        ),
    ],
    otherwise="Divide the MACs by the bytes moved: the input read, the output written and the weights, 4 bytes each.",
    rel_tol=1e-4,
)
def _ch8_depthwise_intensity() -> float:
    """MACs: 9 per output value, 728 x 19 x 19 of them. Bytes: 4 per float32 element of the input,
    the output (728 x 19 x 19 each) and the 9 x 728 weights."""
    macs = 9 * 728 * 19 * 19
    bytes_moved = 4 * (2 * 728 * 19 * 19 + 9 * 728)
    depthwise_intensity = macs / bytes_moved
    return depthwise_intensity


def _pointwise_intensity(c: int) -> float:
    return _intensity(complexity.pointwise_macs(c, c, 19, 19), 2 * c * 19 * 19 + complexity.pointwise_params(c, c))


@exercise(
    "ch8.ridge_width",
    expected=lambda: next(c for c in range(1, 10_000) if _pointwise_intensity(c) >= 10),
    hints=[
        (
            lambda v, e: v == 80,
            "C / 8 is the large-map approximation: at 19 x 19 the C x C weights are not negligible.",
        ),
        (
            lambda v, e: isinstance(v, int) and _pointwise_intensity(v) < 10,
            "At that width the layer is still below the ridge point.",
        ),
        (
            lambda v, e: isinstance(v, int) and v > e and _pointwise_intensity(v - 1) >= 10,
            "A narrower layer already reaches the ridge.",
        ),
    ],
    otherwise="Write the intensity C*C*361 / (4 * (2*C*361 + C*C)) and find the smallest C where it reaches 10.",
)
def _ch8_ridge_width() -> int:
    """A pointwise C -> C convolution on 19 x 19 does C^2 x 361 MACs and moves 4 (2 C x 361 + C^2) bytes;
    the intensity grows with C, so search for the first C at or above the ridge."""
    ridge_width = next(c for c in range(1, 10_000) if c * c * 361 / (4 * (2 * c * 361 + c * c)) >= 10)
    return ridge_width


_TYPICAL_S = 0.005


class _SlowStart:
    """A function to time: its first call takes 0.3 s (warm-up), its fourth 0.15 s (a hiccup), the others 5 ms."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        time.sleep(0.3 if self.calls == 1 else 0.15 if self.calls == 4 else _TYPICAL_S)


@exercise(
    "ch8.median_time",
    expected=lambda: _TYPICAL_S,
    run=lambda fn: float(fn(_SlowStart(), 9)),
    hints=[
        (lambda v, e: v >= 1, "Report seconds, not milliseconds."),
        (
            lambda v, e: v > 0.0125,
            "Your number includes the slow first call or the hiccup: warm up first, and take the median, not the mean.",
        ),
        (lambda v, e: v < 0.004, "Too fast: time each call of fn, one at a time."),
    ],
    otherwise="Call fn once to warm up, then time each of `repeats` calls and return their median in seconds.",
    rel_tol=1.5,
)
def _ch8_median_time() -> Callable[[Callable[[], Any], int], float]:
    """One call first, to warm up (caches, lazy initialisation, thread start-up); then one time per call,
    and the median, which a single slow call does not move."""

    import statistics
    import timeit

    def median_time(fn, repeats):
        fn()  # warm-up, not timed
        times = timeit.repeat(fn, number=1, repeat=repeats)
        return statistics.median(times)

    return median_time


# ================================================================== chapter 9


@functools.cache
def _source() -> Xception:
    """The chapter's pretrained network (five CIFAR-10 classes); callers copy it."""
    return transfer.load_source_model()[0].eval()


def _source_copy(num_classes: int | None = None, trainable: Sequence[str] | None = None) -> Xception:
    """A fresh copy of the source network, with a new head of ``num_classes`` and only ``trainable`` unfrozen."""
    model = copy.deepcopy(_source())
    if num_classes is not None:
        with torch.random.fork_rng():  # the reader's random state stays as it was
            torch.manual_seed(0)
            transfer.replace_head(model, num_classes)
    if trainable is not None:
        transfer.set_trainable(model, trainable)
    return model


def _batch() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(9))


_NEW_CLASSES = 7


def _run_new_head(fn: Callable[[Xception, int], Any]) -> Any:
    """Call ``fn(model, 7)`` on a copy of the source network: the outputs, the trunk, the configuration."""
    with torch.random.fork_rng():
        result = fn(_source_copy(), _NEW_CLASSES)
    if result is None or result is Ellipsis:
        return result
    before = {k: v for k, v in _source().state_dict().items() if not k.startswith("head.")}
    after = result.state_dict()
    with torch.no_grad():
        outputs = result.eval()(_batch()).shape[1]
    return {
        "outputs": outputs,
        "trunk_kept": all(k in after and torch.equal(after[k], v) for k, v in before.items()),
        "config": getattr(getattr(result, "config", None), "num_classes", None),
    }


@exercise(
    "ch9.new_head",
    expected=lambda: _run_new_head(transfer.replace_head),
    run=_run_new_head,
    hints=[
        (
            lambda v, e: isinstance(v, Exception),
            lambda v, e: (
                f"Your function, or the network it returned, failed ({type(v).__name__}: {v}). "
                "model.head is the pooling, the "
                "flattening and the classifier together: replace only its last layer, model.head.fc, and give it "
                "the in_features of the old one."
            ),
        ),
        (
            lambda v, e: v["outputs"] == _source().config.num_classes,
            "The network still has one output per source class: the new classifier needs k outputs.",
        ),
        (
            lambda v, e: v["outputs"] != e["outputs"],
            lambda v, e: f"The network has {v['outputs']} outputs for k = {e['outputs']} classes: use k.",
        ),
        (
            lambda v, e: not v["trunk_kept"],
            "The outputs are right but the trunk's weights changed: a new xl.Xception (or re-initialised "
            "layers) throws away what the source network learned. Keep everything but model.head.fc.",
        ),
        (
            lambda v, e: v["config"] != e["config"],
            "The network is right but model.config.num_classes still says the old number: update it "
            "(dataclasses.replace), so that a saved configuration rebuilds this network.",
        ),
    ],
    otherwise="Replace model.head.fc by an nn.Linear from its in_features to k, and return the model.",
)
def _ch9_new_head() -> Callable[[Xception, int], Xception]:
    """Only the last linear layer depends on the classes: a new one, from the same features to k outputs,
    and a configuration that says k."""

    import dataclasses

    def new_head(model, k):
        model.head.fc = nn.Linear(model.head.fc.in_features, k)
        model.config = dataclasses.replace(model.config, num_classes=k)
        return model

    return new_head


def _run_prepare(fn: Callable[[Xception], Any]) -> Any:
    """Call ``fn(model)`` on a copy with a new head, then one forward pass in the modes it left."""
    model = _source_copy(num_classes=len(transfer.TARGET_CLASSES))
    model.eval()  # as a model is after evaluation: prepare must set the modes itself
    if fn(model) is Ellipsis:
        return ...
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    stats = [torch.cat([m.running_mean, m.running_var]) for m in bns]  # type: ignore[list-item]
    with torch.no_grad():
        model(_batch())
    kept = all(torch.equal(s, torch.cat([m.running_mean, m.running_var])) for s, m in zip(stats, bns, strict=True))  # type: ignore[list-item]
    return {
        "trainable": tuple(n for n, p in model.named_parameters() if p.requires_grad),
        "running_stats_kept": kept,
        "head_training": model.head.training,
    }


def _prepare_by_library(model: Xception) -> None:
    """The chapter's recipe, with the library's functions: only the head trains, the frozen batch norms in eval()."""
    transfer.set_trainable(model, ("head",))
    model.train()
    for m in transfer.frozen_batchnorms(model):
        m.eval()


@exercise(
    "ch9.prepare",
    expected=lambda: _run_prepare(_prepare_by_library),
    run=_run_prepare,
    hints=[
        (
            lambda v, e: not v["trainable"],
            "Nothing is trainable: requires_grad_(False) on the whole model froze the new head too. "
            "Unfreeze model.head afterwards.",
        ),
        (
            lambda v, e: set(v["trainable"]) > set(e["trainable"]),
            lambda v, e: (
                f"{len(set(v['trainable']) - set(e['trainable']))} parameter tensors outside the head "
                f"still require gradients (the first: {sorted(set(v['trainable']) - set(e['trainable']))[0]}). "
                "Freeze whole modules with requires_grad_(False), batch norms' weights and biases included."
            ),
        ),
        (
            lambda v, e: v["trainable"] != e["trainable"],
            "Only the new head's parameters, model.head.fc's weight and bias, should require gradients.",
        ),
        (
            lambda v, e: not v["running_stats_kept"],
            "The right parameters are frozen, but a forward pass in training mode still moved the frozen batch "
            "norms' running statistics (requires_grad does not stop that). Put them in eval() after model.train().",
        ),
        (
            lambda v, e: not v["head_training"],
            "The whole model is in eval mode: a training step needs the head in training mode (dropout, if any). "
            "Call model.train() first, then eval() on the frozen batch norms.",
        ),
    ],
    otherwise="Freeze everything, unfreeze model.head, call model.train(), then eval() on every frozen batch norm.",
)
def _ch9_prepare() -> Callable[[Xception], None]:
    """requires_grad_(False) stops the gradients, not the running statistics: the batch norms of the frozen
    part go to eval() after model.train(), at the start of every training run (and after every evaluation)."""

    def prepare(model):
        model.requires_grad_(False)
        model.head.requires_grad_(True)
        model.train()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # all frozen: the head has none
                m.eval()

    return prepare


_LR = 0.05


def _run_groups(fn: Callable[[Xception, float], Any]) -> Any:
    """Call ``fn(model, 0.05)`` on a copy with a new head and the exit flow unfrozen: each parameter's lrs."""
    model = _source_copy(num_classes=len(transfer.TARGET_CLASSES), trainable=("exit_flow", "head"))
    groups = fn(model, _LR)
    if groups is None or _unanswered(groups):
        return groups
    names = {id(p): n for n, p in model.named_parameters()}
    lrs: dict[str, tuple[float, ...]] = {}
    for group in groups:
        for p in list(group["params"]):
            lrs[names[id(p)]] = (*lrs.get(names[id(p)], ()), float(group["lr"]))
    return {n: tuple(sorted(v)) for n, v in lrs.items()}


@exercise(
    "ch9.param_groups",
    expected=lambda: _run_groups(lambda model, lr: transfer.param_groups(model, lr=lr, pretrained_lr_scale=0.1)),
    run=_run_groups,
    hints=[
        (
            lambda v, e: any(len(lrs) > 1 for lrs in v.values()),
            "Some parameters are in both groups (model.parameters() includes the head's): an optimizer refuses "
            "that. Leave the head's parameters out of the pretrained group.",
        ),
        (
            lambda v, e: v.keys() - e.keys(),
            "Your groups include frozen parameters. The optimizer skips them while they get no gradient, but they "
            "would train at that rate as soon as they were unfrozen: keep only those with requires_grad.",
        ),
        (
            lambda v, e: e.keys() - v.keys(),
            lambda v, e: (
                f"{len(e.keys() - v.keys())} trainable parameters are in no group "
                f"(the first: {sorted(e.keys() - v.keys())[0]}): every trainable parameter belongs to one."
            ),
        ),
        (
            lambda v, e: v["head.fc.weight"][0] < v["exit_flow.bn2.weight"][0],
            "The new head has the small learning rate and the pretrained layers the large one: swap them.",
        ),
        (
            lambda v, e: len({lrs[0] for lrs in v.values()}) == 1,
            "Every parameter has the same learning rate: the pretrained layers' should be a tenth of the head's.",
        ),
    ],
    otherwise="Two groups: the trainable parameters of model.head at lr, every other trainable one at lr / 10.",
)
def _ch9_param_groups() -> Callable[[Xception, float], list[dict[str, Any]]]:
    """The head's trainable parameters at lr; every other trainable parameter, once, at a tenth of it.
    Frozen ones are left out: the groups say what trains."""

    def groups(model, lr):
        head = {id(p) for p in model.head.parameters()}
        trainable = [p for p in model.parameters() if p.requires_grad]
        return [
            {"params": [p for p in trainable if id(p) in head], "lr": lr},
            {"params": [p for p in trainable if id(p) not in head], "lr": lr / 10},
        ]

    return groups


_DEEPER = ("middle_flow", "exit_flow", "head")


def _deeper() -> Xception:
    """A copy with a new head and the middle flow, exit flow and head unfrozen."""
    return _source_copy(num_classes=len(transfer.TARGET_CLASSES), trainable=_DEEPER)


def _run_count(fn: Callable[[Xception], Any]) -> Any:
    return fn(_deeper())


@exercise(
    "ch9.count_trainable",
    expected=lambda: _run_count(lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)),
    run=_run_count,
    hints=[
        (
            lambda v, e: v == sum(p.numel() for p in _deeper().parameters()),
            "That is every parameter, the frozen ones included: count only those with requires_grad.",
        ),
        (
            lambda v, e: v == sum(p.numel() for p in _deeper().parameters() if not p.requires_grad),
            "That is the frozen part: requires_grad is True for the parameters that train.",
        ),
        (
            lambda v, e: v == sum(1 for p in _deeper().parameters() if p.requires_grad),
            "That is the number of parameter tensors: count the numbers in each (p.numel()).",
        ),
    ],
    otherwise="Add up p.numel() over the parameters p of model whose requires_grad is True.",
)
def _ch9_count_trainable() -> Callable[[Xception], int]:
    """What the optimizer updates: the elements of every parameter that requires a gradient."""

    def count_trainable(model):
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    return count_trainable


def names(chapter: int | None = None) -> list[str]:
    """The names of the registered exercises (of one chapter, or all)."""
    return [n for n in EXERCISES if chapter is None or n.startswith(f"ch{chapter}.")]


__all__ = [
    "EXERCISES",
    "Exercise",
    "Solution",
    "Verdict",
    "check",
    "exercise",
    "names",
    "quiz",
    "quiz_questions",
    "same",
    "solution",
    "verdict",
]
