"""from_timm: timm's legacy_xception (random weights, no download) gives identical logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xception_lib as xl
from xception_lib.pretrained import timm_key_map

timm = pytest.importorskip("timm", reason="timm is the equivalence oracle; install xception_lib[tools]")


@pytest.fixture(scope="module")
def reference() -> nn.Module:
    """legacy_xception with random weights and random batch-norm statistics."""
    torch.manual_seed(0)
    model = timm.create_model("legacy_xception", pretrained=False, num_classes=1000)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.slow
def test_logits_match_timm_in_eval_mode(reference: nn.Module) -> None:
    model = xl.from_timm(reference)
    assert not model.training
    x = torch.randn(2, 3, 299, 299, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(x), reference(x)
    assert ours.shape == (2, 1000)
    assert (ours - theirs).abs().max().item() <= 1e-4


def test_from_state_dict_and_every_tensor_is_used(reference: nn.Module) -> None:
    state = reference.state_dict()
    model = xl.from_timm(state)
    mapping = timm_key_map(model.config)
    ours = model.state_dict()
    assert len(ours) == len(state)
    for key, tensor in ours.items():
        prefix, _, leaf = key.rpartition(".")
        assert torch.equal(tensor, state[f"{mapping[prefix]}.{leaf}"])


@pytest.mark.slow
def test_keras_conventions_change_the_logits(reference: nn.Module) -> None:
    keras = xl.from_timm(reference, config=xl.XceptionConfig.imagenet())
    port = xl.from_timm(reference)
    x = torch.randn(1, 3, 299, 299, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert not torch.allclose(keras(x), port(x), atol=1e-6)


def test_num_classes_read_from_weights() -> None:
    small = timm.create_model("legacy_xception", pretrained=False, num_classes=10)
    assert xl.from_timm(small).head.fc.out_features == 10


def test_shape_mismatch_and_missing_keys_are_named(reference: nn.Module) -> None:
    state = dict(reference.state_dict())
    state["block4.rep.1.pointwise.weight"] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(ValueError, match=r"shape mismatch: 'middle_flow.block1.layers.sep1.pointwise.weight'"):
        xl.from_timm(state)
    del state["block4.rep.1.pointwise.weight"]
    with pytest.raises(ValueError, match=r"timm weights lack 'block4.rep.1.pointwise.weight'"):
        xl.from_timm(state)
    extra = dict(reference.state_dict(), **{"block13.rep.1.conv1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="does not use"):
        xl.from_timm(extra)


def test_bad_argument_types() -> None:
    with pytest.raises(TypeError, match="expected a timm legacy_xception model or its state_dict"):
        xl.from_timm(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fc.weight"):
        xl.from_timm({})
    with pytest.raises(ValueError, match="residual=True"):
        timm_key_map(xl.XceptionConfig.timm_port(residual=False))
