import pytest
import torch
from torch import nn

from xception_lib.runtime import eval_mode, resolve_amp, synchronize


def test_eval_mode_restores_the_mode_it_found_even_after_an_error() -> None:
    model = nn.Sequential(nn.BatchNorm1d(2))
    for start in (True, False):
        model.train(start)
        with eval_mode(model) as inside:
            assert inside is model and not model.training
        assert model.training is start
        try:
            with eval_mode(model):
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        assert model.training is start


def test_synchronize_waits_for_the_device_it_is_given_and_only_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    waited: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    monkeypatch.setattr(torch.mps, "synchronize", lambda: waited.append("mps"))
    synchronize("cpu")
    synchronize(torch.device("cpu"))
    assert waited == []  # the CPU's calls are synchronous: nothing to wait for
    synchronize("cuda:1")
    synchronize(torch.device("cuda", 0))
    assert waited == [torch.device("cuda:1"), torch.device("cuda:0")]  # that device, not the current one
    synchronize("mps")
    assert waited[-1] == "mps"
    with pytest.raises(RuntimeError, match="device"):
        synchronize("gpu0")  # a misspelt device is an error, not a silent no-op


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((7, 0), torch.float16), ((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)],
)
def test_auto_precision_follows_the_compute_capability(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], expected: torch.dtype
) -> None:
    asked = []

    def fake_capability(device: object = None) -> tuple[int, int]:
        asked.append(device)
        return capability

    monkeypatch.setattr(torch.cuda, "get_device_capability", fake_capability)
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True
    )  # as on a T4 (emulation): not the test
    assert resolve_amp("auto", "cuda:0") is expected
    assert asked == [torch.device("cuda:0")]  # the capability of the device that trains


def test_mixed_precision_choice() -> None:
    assert resolve_amp("auto", "cpu") is None
    assert resolve_amp("off", "cuda") is None
    assert resolve_amp("bf16", "cpu") is torch.bfloat16
    assert resolve_amp("fp16", "cuda") is torch.float16
    with pytest.raises(ValueError, match="amp"):
        resolve_amp("fp8", "cpu")
