"""Tests of fit under DistributedDataParallel (xception_lib.distributed): 2 CPU processes (gloo) against one.

Two processes with half the global batch each must train exactly like one process with the
whole batch: same weights, same metrics, one checkpoint. The model has no batch norm, which
would normalise each half batch with its own statistics (SyncBatchNorm needs a GPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path

import pytest
import torch
from torch import nn

import xception_lib as xl
from xception_lib.checkpoint import CHECKPOINT_NAME, load_checkpoint
from xception_lib.distributed import synced_batchnorm
from xception_lib.train import TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")

WORLD_SIZE = 2
# 200 training images: 6 global batches of 32 (8 images dropped, as in one process);
# 101 test images: neither even nor a multiple of WORLD_SIZE * eval_batch_size.
NORM = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
CONFIG = TrainConfig(epochs=2, batch_size=32, lr=0.05, amp="off", eval_batch_size=20, log_every=2, seed=3)


def synthetic_cifar(train: int = 200, test: int = 101) -> xl.data.CifarArrays:
    """Random uint8 images whose label is the image's brightest quarter (learnable, fast)."""
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        quarters = images.float().mean(1).unfold(1, 16, 16).unfold(2, 16, 16).mean((-1, -2))  # n x 2 x 2
        return images, quarters.flatten(1).argmax(1)

    train_images, train_labels = split(train)
    test_images, test_labels = split(test)
    classes = tuple(f"class {i}" for i in range(10))
    return xl.data.CifarArrays("cifar10", train_images, train_labels, test_images, test_labels, classes, "synthetic")


def tiny_cnn(batch_norm: bool = False) -> nn.Module:
    """A small classifier, without batch norm unless asked (the same initial weights on every call)."""
    torch.manual_seed(0)
    norm: list[nn.Module] = [nn.BatchNorm2d(8)] if batch_norm else []
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        *norm,
        nn.ReLU(),
        nn.MaxPool2d(2),  # N x 8 x 16 x 16
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),  # N x 16 x 1 x 1
        nn.Flatten(),
        nn.Linear(16, 10),  # N x 10
    )


def _has_sync_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())


def _ddp_worker(rank: int, world_size: int, out_dir: str) -> None:
    """One ``torchrun``-style process: join the group, fit, save what happened for the test."""
    torch.set_num_threads(1)
    out = Path(out_dir)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{out / 'store'}", rank=rank, world_size=world_size
    )
    saves: list[str] = []
    real_save = xl.checkpoint.atomic_save

    def counting_save(obj: object, target: Path) -> Path:
        saves.append(str(target))
        return real_save(obj, target)

    xl.checkpoint.atomic_save = counting_save  # in this child process only
    printed = io.StringIO()
    try:
        model = tiny_cnn()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            history = fit(
                model, synthetic_cifar(), CONFIG, device="cpu", checkpoint_dir=out / "checkpoints", progress=True
            )
        # Batch norm on CPUs: no SyncBatchNorm (it would raise in training), statistics per process.
        bn_model = tiny_cnn(batch_norm=True)
        synced: list[bool] = []

        def record(epoch: int, run: xl.history.History) -> None:
            synced.append(_has_sync_batchnorm(bn_model))

        fit(
            bn_model,
            synthetic_cifar(),
            dataclasses.replace(CONFIG, epochs=1),
            device="cpu",
            progress=False,
            callbacks=[record],
        )
        torch.save(
            {
                "model": model.state_dict(),
                "history": history.to_dict(),
                "saves": saves,
                "printed": printed.getvalue(),
                "bn_model": bn_model.state_dict(),
                "bn_synced": synced,
            },
            out / f"rank{rank}.pt",
        )
    finally:
        torch.distributed.destroy_process_group()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_ddp_worker, args=(WORLD_SIZE, str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]

    single_model = tiny_cnn()
    initial = _state(single_model)
    single = fit(single_model, synthetic_cifar(), CONFIG, device="cpu", progress=False)
    want = _state(single_model)

    # Weights: the ranks agree bit for bit (DDP applies the same averaged gradient
    # everywhere) and match one process up to the order of floating-point sums.
    assert any(not torch.equal(initial[k], want[k]) for k in want)  # it did train
    for r, result in enumerate(ranks):
        assert result["model"].keys() == want.keys()
        for key in want:
            assert torch.equal(result["model"][key], ranks[0]["model"][key]), f"rank {r}: {key} differs from rank 0"
            assert torch.allclose(result["model"][key], want[key], rtol=0, atol=1e-5), f"rank {r}: {key}"

    # Metrics: reduced over the ranks, they are the single process's.
    for result in ranks:
        got = xl.history.History.from_dict(result["history"])
        assert got.epochs == single.epochs == CONFIG.epochs and got.steps == single.steps == CONFIG.epochs * (200 // 32)
        assert got.lr == single.lr and got.step_lr == single.step_lr
        assert got.train_acc == single.train_acc  # the same images, the same predictions
        assert got.test_acc == single.test_acc  # every one of the 101 test images counted once
        assert got.train_loss == pytest.approx(single.train_loss, rel=1e-5)
        assert got.test_loss == pytest.approx(single.test_loss, rel=1e-5)
        assert got.step_loss == pytest.approx(single.step_loss, rel=1e-5)  # the global batch's loss
        assert got.meta["world_size"] == WORLD_SIZE and single.meta["world_size"] == 1
    assert 0 < single.test_acc[-1] < 1 and single.step_loss[-1] < single.step_loss[0]

    # Checkpoints: rank 0 wrote one after every epoch, rank 1 none; it holds the final weights.
    checkpoint = tmp_path / "checkpoints" / CHECKPOINT_NAME
    assert ranks[0]["saves"] == [str(checkpoint)] * CONFIG.epochs and ranks[1]["saves"] == []
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == [CHECKPOINT_NAME]
    state = load_checkpoint(checkpoint)
    assert state["epoch"] == CONFIG.epochs and state["history"]["meta"]["world_size"] == WORLD_SIZE
    assert all(torch.equal(state["model"][k], ranks[0]["model"][k]) for k in want)

    # Progress: only rank 0 reports.
    assert f"epoch {CONFIG.epochs}/{CONFIG.epochs}: train loss" in ranks[0]["printed"] and ranks[1]["printed"] == ""

    # Batch norm on CPUs trains with per-process statistics, and every process ends with
    # rank 0's running statistics (those that evaluation and the checkpoint used).
    assert ranks[0]["bn_synced"] == ranks[1]["bn_synced"] == [False]
    bn_keys = ranks[0]["bn_model"].keys()
    assert "1.running_mean" in bn_keys
    assert all(torch.equal(ranks[0]["bn_model"][k], ranks[1]["bn_model"][k]) for k in bn_keys)


# ----------------------------------------------------------------------------- the pieces


@pytest.mark.parametrize("n", [1, 7, 101])
@pytest.mark.parametrize("world_size", [2, 3])
def test_evaluation_shards_count_every_image_once(n: int, world_size: int) -> None:
    images = torch.zeros(n, 3, 4, 4, dtype=torch.uint8)
    labels = torch.arange(n)  # a label names its image
    seen = []
    for rank in range(world_size):
        loader = xl.loader.GpuLoader(
            images, labels, batch_size=4, train=False, rank=rank, world_size=world_size, **NORM
        )
        batches = [y for _, y in loader]
        seen += batches
        assert len(loader) == len(batches)
    assert sorted(torch.cat(seen).tolist()) == list(range(n))
    # Training shards stay equally long, so that every process makes the same steps.
    train = [
        xl.loader.GpuLoader(images, labels, batch_size=1, rank=r, world_size=world_size, **NORM)
        for r in range(world_size)
    ]
    assert {len(loader) for loader in train} == {n // world_size}


def test_each_process_draws_its_own_dropout() -> None:
    seeds = [xl.distributed.epoch_seed(0, epoch=1, rank=r) for r in range(4)]
    assert len(set(seeds)) == 4
    assert seeds[0] == xl.distributed.epoch_seed(0, epoch=1)  # rank 0 is the single process
    assert xl.distributed.epoch_seed(0, epoch=2, rank=1) != seeds[1]


def test_synced_batchnorm_shares_the_original_tensors() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64)))
    originals = [model[1], model[2][1]]
    params, buffers = [id(p) for p in model.parameters()], [id(b) for b in model.buffers()]
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 4, 4)
    with synced_batchnorm(model) as synced:
        assert synced is model and isinstance(model[1], nn.SyncBatchNorm) and isinstance(model[2][1], nn.SyncBatchNorm)
        assert [id(p) for p in model.parameters()] == params and [id(b) for b in model.buffers()] == buffers
        assert list(model.state_dict()) == keys
        model.eval()  # no process group: SyncBatchNorm falls back to plain batch norm
        with torch.no_grad():
            model[1].weight.copy_(torch.arange(4.0))
        inside = model(x)
    assert model[1] is originals[0] and model[2][1] is originals[1] and not _has_sync_batchnorm(model)
    assert not originals[0].training  # the mode set inside the block
    assert torch.equal(originals[0].weight, torch.arange(4.0)) and torch.equal(model(x), inside)
    with pytest.raises(RuntimeError, match="stop"), synced_batchnorm(model):
        raise RuntimeError("stop")
    assert model[1] is originals[0]  # put back after an error too


def test_batchnorm_is_not_synced_on_a_cpu_or_in_one_process() -> None:
    model = tiny_cnn(batch_norm=True)
    synced: list[bool] = []
    cfg = dataclasses.replace(CONFIG, epochs=1, sync_batchnorm=True)

    def record(epoch: int, run: xl.history.History) -> None:
        synced.append(_has_sync_batchnorm(model))

    fit(model, synthetic_cifar(64, 16), cfg, device="cpu", progress=False, callbacks=[record])
    assert synced == [False] and isinstance(model[1], nn.BatchNorm2d)
