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


def test_synchronize_accepts_cpu_devices_and_names() -> None:
    synchronize("cpu")
    synchronize(torch.device("cpu"))
