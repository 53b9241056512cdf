import pytest
import torch
from torch import nn

from xception_lib.runtime import eval_mode, synchronize


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
