"""Weights from timm's ``legacy_xception``, the reference PyTorch port of the Keras model.

The Keras weights (``keras.applications.Xception``) were converted to PyTorch by tstandley and Cadene; timm ships
that port as ``legacy_xception``. Two conventions did not survive the conversion, so the port computes a slightly
different function from the Keras model with the same weights:

* **Batch-norm epsilon.** Keras uses ``epsilon=1e-3``, the port PyTorch's default ``eps=1e-5``. For channels with a
  small running variance the normalised values differ.
* **Max-pool padding.** Keras pools with ``padding="same"``, which TensorFlow implements by padding only at the
  bottom/right when the input size is even: in Xception only 74 -> 37 (147, 37 and 19 are odd and padded one pixel
  on each side). The port's ``nn.MaxPool2d(3, 2, padding=1)`` pads one pixel on every side, so its pooling windows
  are shifted by one pixel there.

:func:`from_timm` reproduces the port exactly (``XceptionConfig.timm_port()``), so its logits equal timm's.
``xl.xception()`` uses the Keras conventions instead; load the port's weights into it with
``from_timm(..., config=xl.XceptionConfig.imagenet())``. The port's input normalisation is
``mean = std = (0.5, 0.5, 0.5)`` (inputs in [-1, 1]), as in Keras's ``preprocess_input`` for Xception.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from xception_lib.config import XceptionConfig
from xception_lib.model import Xception, XceptionBlock


def timm_key_map(config: XceptionConfig) -> dict[str, str]:
    """The explicit map from this library's parameter and buffer names to timm's.

    timm names blocks ``block1`` ... ``block12`` and their layers by position in a ``rep`` Sequential (``ReLU,
    SeparableConv2d, BatchNorm2d`` repeated, the first block without its leading ReLU); this library names them
    ``sep1``, ``bn1``, ....

    Returns:
        ``{our_prefix: timm_prefix}`` for every module of ``config``'s model that holds tensors.
    """
    if not config.residual:
        raise ValueError("timm's legacy_xception has residual connections; expected residual=True")
    mapping = {"stem.conv1": "conv1", "stem.bn1": "bn1", "stem.conv2": "conv2", "stem.bn2": "bn2"}
    with torch.device("meta"):
        ours = [name for name, m in Xception(config).named_modules() if isinstance(m, XceptionBlock)]
    for n, (block, spec) in enumerate(zip(ours, config.blocks(), strict=True), start=1):  # timm: block1 ... block12
        offset = 0 if spec.start_with_relu else -1  # timm drops the leading ReLU from rep
        for i in range(spec.reps):
            sep_index = 3 * i + 1 + offset
            mapping[f"{block}.layers.sep{i + 1}.depthwise"] = f"block{n}.rep.{sep_index}.conv1"
            mapping[f"{block}.layers.sep{i + 1}.pointwise"] = f"block{n}.rep.{sep_index}.pointwise"
            mapping[f"{block}.layers.bn{i + 1}"] = f"block{n}.rep.{sep_index + 1}"
        if spec.projects:
            mapping |= {f"{block}.shortcut.conv": f"block{n}.skip", f"{block}.shortcut.bn": f"block{n}.skipbn"}
    mapping |= {
        "exit_flow.sep1.depthwise": "conv3.conv1",
        "exit_flow.sep1.pointwise": "conv3.pointwise",
        "exit_flow.bn1": "bn3",
        "exit_flow.sep2.depthwise": "conv4.conv1",
        "exit_flow.sep2.pointwise": "conv4.pointwise",
        "exit_flow.bn2": "bn4",
        "head.fc": "fc",
    }
    return mapping


def from_timm(
    timm_model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    *,
    config: XceptionConfig | None = None,
) -> Xception:
    """Build an Xception carrying the weights of timm's ``legacy_xception``.

    Every tensor of the returned model is assigned from exactly one timm tensor through
    :func:`timm_key_map`; a missing key, a left-over key or a shape mismatch raises
    ``ValueError`` naming it.

    Args:
        timm_model_or_state_dict: A ``timm.create_model("legacy_xception")`` model (with
            random or pretrained weights) or its ``state_dict()``.
        config: Architecture to load into. Default: ``XceptionConfig.timm_port()`` with
            the classifier size read from the weights, which reproduces timm's logits.

    Returns:
        The model, in eval mode.
    """
    if isinstance(timm_model_or_state_dict, nn.Module):
        source = dict(timm_model_or_state_dict.state_dict())
    elif isinstance(timm_model_or_state_dict, Mapping):
        source = dict(timm_model_or_state_dict)
    else:
        raise TypeError(
            f"expected a timm legacy_xception model or its state_dict, got {type(timm_model_or_state_dict).__name__}"
        )
    if "fc.weight" not in source:
        raise ValueError("expected a legacy_xception state_dict with a classifier 'fc.weight'; it is missing")
    cfg = config if config is not None else XceptionConfig.timm_port(num_classes=source["fc.weight"].shape[0])
    model = Xception(cfg)
    prefixes = timm_key_map(cfg)
    loaded: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        prefix, _, leaf = key.rpartition(".")
        their_key = f"{prefixes[prefix]}.{leaf}"  # every prefix is in the map (tests/test_pretrained.py)
        if their_key not in source:
            raise ValueError(f"timm weights lack {their_key!r} (needed for {key!r})")
        theirs = source.pop(their_key)
        if theirs.shape != tensor.shape:
            raise ValueError(
                f"shape mismatch: {key!r} expects {tuple(tensor.shape)}, timm's {their_key!r} has {tuple(theirs.shape)}"
            )
        loaded[key] = theirs
    if source:
        raise ValueError(f"timm weights have tensors this model does not use: {sorted(source)[:5]}")
    model.load_state_dict(loaded, strict=True)
    return model.eval()
