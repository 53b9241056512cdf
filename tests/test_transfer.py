"""Transfer learning (xception_lib.transfer): head replacement, freezing, batch norm, parameter groups, regimes."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
from torch import nn

import xception_lib as xl
from xception_lib import transfer
from xception_lib.data import CifarArrays


def tiny(num_classes: int = 5) -> xl.Xception:
    torch.manual_seed(0)
    return xl.xception_cifar(num_classes, width_multiplier=0.125, middle_blocks=1)


def random_data(n_per_class: int = 4, classes: int = 3, size: int = 16, seed: int = 0) -> CifarArrays:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    # class-dependent brightness, so that the classes are learnable
    images = (torch.rand(len(labels), 3, size, size, generator=g) * 100 + labels.view(-1, 1, 1, 1) * 60).to(torch.uint8)
    names = tuple(f"c{i}" for i in range(classes))
    return CifarArrays("cifar10", images, labels, images.clone(), labels.clone(), names, "random")


def test_replace_head_changes_only_the_classifier() -> None:
    model = tiny(5)
    before = copy.deepcopy(model.state_dict())
    transfer.replace_head(model, 3)
    assert model.head.fc.out_features == 3 and model.config.num_classes == 3
    after = copy.deepcopy(model.state_dict())
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 3)
    for key, value in before.items():
        if key.startswith("head.fc"):
            assert after[key].shape != value.shape
        else:
            assert torch.equal(after[key], value), key
    with pytest.raises(ValueError, match="positive int"):
        transfer.replace_head(model, 0)


def test_frozen_parameters_get_no_gradient_and_do_not_change() -> None:
    model = transfer.replace_head(tiny(5), 3)
    transfer.set_trainable(model, ("exit_flow", "head"))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith(("exit_flow", "head"))}
    assert frozen and all(not p.requires_grad for n, p in model.named_parameters() if n in frozen)
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    optimizer.step()
    for name, p in model.named_parameters():
        if name in frozen:
            assert p.grad is None, name
            assert torch.equal(p, frozen[name]), name
    assert any(not torch.equal(p, trainable[n]) for n, p in model.named_parameters() if n in trainable)


def running_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


@pytest.mark.parametrize("batch_norm", ["frozen", "train"])
def test_fine_tune_keeps_frozen_batch_norm_statistics(batch_norm: str) -> None:
    data = random_data()
    model = transfer.replace_head(tiny(5), data.num_classes)
    transfer.set_trainable(model, ("exit_flow", "head"))
    before = running_stats(model)
    transfer.fine_tune(model, data, steps=2, batch_size=6, batch_norm=batch_norm)  # type: ignore[arg-type]
    after = running_stats(model)
    frozen_keys = [k for k in before if not k.startswith("exit_flow")]
    changed = [k for k in frozen_keys if not torch.equal(before[k], after[k])]
    if batch_norm == "frozen":
        assert not changed  # eval(): the source's statistics are kept
    else:
        assert changed  # train mode updates the statistics, requires_grad or not
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("exit_flow"))  # trained part


def test_fine_tune_eval_keeps_every_statistic() -> None:
    data = random_data()
    model = transfer.replace_head(tiny(5), data.num_classes)
    transfer.set_trainable(model, transfer.STAGES)
    before = running_stats(model)
    weights = model.stem.conv1.weight.detach().clone()
    transfer.fine_tune(model, data, steps=2, batch_size=6, batch_norm="eval")
    assert all(torch.equal(before[k], v) for k, v in running_stats(model).items())
    assert not torch.equal(weights, model.stem.conv1.weight)  # the weights themselves trained


def test_param_groups_split_head_from_pretrained() -> None:
    model = transfer.replace_head(tiny(5), 3)
    transfer.set_trainable(model, ("exit_flow", "head"))
    groups = transfer.param_groups(model, lr=0.1, pretrained_lr_scale=0.01)
    assert [g["lr"] for g in groups] == [0.1, pytest.approx(0.001)]
    head_ids = {id(p) for p in model.head.parameters()}
    assert {id(p) for p in groups[0]["params"]} == head_ids
    exit_ids = {id(p) for p in model.exit_flow.parameters()}
    assert {id(p) for p in groups[1]["params"]} == exit_ids  # frozen parameters left out
    transfer.set_trainable(model, ("head",))
    assert len(transfer.param_groups(model, lr=0.1)) == 1  # the empty group dropped


def test_fine_tune_steps_each_group_at_its_learning_rate() -> None:
    data = random_data()
    model = transfer.replace_head(tiny(5), data.num_classes)
    transfer.set_trainable(model, transfer.STAGES)
    start = copy.deepcopy(model)
    transfer.fine_tune(model, data, steps=1, lr=0.5, pretrained_lr_scale=0.0, batch_size=12, weight_decay=0.0)
    # a scale of 0: the pretrained part does not move, the head does
    assert torch.equal(model.stem.conv1.weight, start.stem.conv1.weight)
    assert not torch.equal(model.head.fc.weight, start.head.fc.weight)


def test_linear_probe_fits_the_head_alone() -> None:
    data = random_data(n_per_class=6)
    model = transfer.replace_head(tiny(5), data.num_classes)
    transfer.set_trainable(model, ("head",))
    body = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head")}
    transfer.linear_probe(model, data)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in body.items())
    acc = xl.evaluation.evaluate(model, data.train_images, data.train_labels, mean=data.mean, std=data.std)
    assert acc > 0.9  # 18 images of 3 classes that differ in brightness: separable


def test_adapt_leaves_the_source_unchanged_and_counts_classes() -> None:
    data = random_data()
    source = tiny(5)
    before = copy.deepcopy(source.state_dict())
    for regime in transfer.REGIMES:
        model = transfer.adapt(source, data, regime, steps=1, batch_size=6)
        assert model.config.num_classes == 3 and not model.training
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in before.items())
    scratch = transfer.adapt(source, data, "scratch", steps=1, batch_size=6, seed=0)
    assert not torch.equal(scratch.stem.conv1.weight, source.stem.conv1.weight)
    with pytest.raises(ValueError, match="regime must be one of"):
        transfer.adapt(source, data, "everything", steps=1)  # type: ignore[arg-type]


def test_class_subset_and_few_per_class() -> None:
    data = random_data(n_per_class=5, classes=4)
    data = dataclasses.replace(data, classes=("a", "b", "c", "d"))
    sub = transfer.class_subset(data, ["d", "b"])
    assert sub.classes == ("d", "b")
    assert torch.equal(sub.train_labels, torch.tensor([1] * 5 + [0] * 5))  # b's images first, labelled 1
    assert torch.equal(sub.train_images[:5], data.train_images[5:10])
    few = transfer.few_per_class(sub, 2, seed=1)
    assert torch.bincount(few.train_labels).tolist() == [2, 2] and len(few.test_labels) == 10
    assert torch.equal(few.train_images, transfer.few_per_class(sub, 2, seed=1).train_images)
    with pytest.raises(ValueError, match="not among"):
        transfer.class_subset(data, ["a", "z"])
    with pytest.raises(ValueError, match="1..5"):
        transfer.few_per_class(sub, 6)


def test_shipped_source_model_matches_its_provenance() -> None:
    model, provenance = transfer.load_source_model()
    assert provenance["classes"] == list(transfer.SOURCE_CLASSES)
    assert transfer.SOURCE_MODEL.stat().st_size == provenance["bytes"] <= 2_000_000
    assert sum(p.numel() for p in model.parameters()) == provenance["parameters"]
    assert model.config.num_classes == len(transfer.SOURCE_CLASSES)
    json.dumps(provenance)


def test_recorded_table_has_every_regime_and_size() -> None:
    table = json.loads(transfer.TRANSFER_TABLE.read_text())
    rows = table["rows"]
    sizes = {r["per_class"] for r in rows}
    for size in sizes:
        assert {r["regime"] for r in rows if r["per_class"] == size} == set(transfer.REGIMES)
    assert all(0 <= r["test_acc"] <= 1 for r in rows)
    assert table["environment"]["torch"] and table["command"]


@pytest.mark.parametrize("regime", ["probe", "top"])
def test_accuracy_from_shared_trunk_equals_full_evaluation(regime: str) -> None:
    data = random_data(n_per_class=5)
    source = tiny(5).eval()
    model = transfer.adapt(source, data, regime, steps=2, batch_size=6)  # type: ignore[arg-type]
    trunk = transfer.trunk_outputs(source, data.test_images, mean=data.mean, std=data.std)
    logits_shared = model.forward_head(model.exit_flow(trunk))
    with torch.no_grad():
        x = (data.test_images.float() / 255 - torch.tensor(data.mean).view(1, 3, 1, 1)) / torch.tensor(data.std).view(
            1, 3, 1, 1
        )
        logits_full = model(x)
    assert torch.allclose(logits_shared, logits_full, atol=1e-4)
    full = xl.evaluation.evaluate(model, data.test_images, data.test_labels, mean=data.mean, std=data.std)
    assert transfer.accuracy_from_trunk(model, trunk, data.test_labels) == full


@pytest.mark.slow
def test_run_experiment_table() -> None:
    data = random_data(n_per_class=3)
    table = transfer.run_experiment(tiny(5), data, sizes=[1, 2], seeds=[0, 1], steps={1: 1, 2: 1}, progress=False)
    assert len(table) == 2 * 2 * len(transfer.REGIMES)
    assert set(table.columns) == {"per_class", "regime", "seed", "test_acc", "seconds"}
    assert table["test_acc"].between(0, 1).all()


def test_few_per_class_of_the_test_split() -> None:
    data = random_data(n_per_class=5, classes=3)
    few = transfer.few_per_class(data, 2, split="test")
    assert torch.bincount(few.test_labels).tolist() == [2, 2, 2]
    assert torch.equal(few.train_images, data.train_images)


@pytest.mark.slow
def test_colab_path_on_random_timm_weights_and_synthetic_flowers() -> None:
    """What the chapter runs in Colab (ImageNet Xception through timm, a torchvision data set of PIL images),
    on random weights and a synthetic data set of the same format, at a small image size."""
    timm = pytest.importorskip("timm")
    from PIL import Image

    from xception_lib.folders import arrays_from_datasets

    torch.manual_seed(0)
    model = xl.from_timm(timm.create_model("legacy_xception", pretrained=False))
    g = torch.Generator().manual_seed(0)

    def pairs(n: int) -> list[tuple[Image.Image, int]]:  # like torchvision's Flowers102: (PIL image, label)
        colours = torch.randint(0, 256, (n, 3), generator=g)
        return [(Image.new("RGB", (90, 80), tuple(c.tolist())), i % 3) for i, c in enumerate(colours)]

    data = arrays_from_datasets(pairs(6), pairs(3), ["a", "b", "c"], image_size=71, mean=(0.5,) * 3, std=(0.5,) * 3)
    lines: list[str] = []
    result = transfer.fine_tune_pretrained(model, data, top_steps=1, all_steps=1, batch_size=3, report=lines.append)
    assert model.config.num_classes == 3 and model.head.fc.out_features == 3
    assert result["estimate_s"] > 0 and 0 <= result["test_acc_all"] <= 1
    assert lines[0].startswith("estimate:") and len(lines) == 3
