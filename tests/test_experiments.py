"""The ablations change exactly what they say; the sweep sizing; the runner writes valid records."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

import xception_lib as xl
from xception_lib import complexity as cx
from xception_lib.chapters import experiments as ex

REPO = Path(__file__).resolve().parents[1]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_macs(config: xl.XceptionConfig) -> int:
    """fvcore's convolution MACs for one 32x32 image (the counter, not the formulas)."""
    pytest.importorskip("fvcore", reason="the MAC counter; install xception_lib[tools]")
    return int(cx.fvcore_analysis(xl.Xception(config), (1, 3, 32, 32)).by_operator()["conv"])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these tests check behaviour, not speed, and on a shared two-core runner two
    threads per process can be many times slower than one (they wait for each other's time slices)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_base() -> xl.XceptionConfig:
    """A quarter-width CIFAR base with one middle block: every layer kind, fast on a CPU."""
    return xl.XceptionConfig.cifar(width_multiplier=0.25, middle_blocks=1)


# ---------------------------------------------------------------- the ablation list


def test_spectrum_runs_from_regular_to_depthwise() -> None:
    assert ex.spectrum_segments(xl.XceptionConfig.cifar()) == [1, 2, 4, 8, 16, 32, 64, None]
    assert ex.spectrum_segments(ex.sweep_base()) == [1, 2, 4, 8, 16, 32, None]
    base = ex.sweep_base()
    too_far = 2 * max(g for g in ex.spectrum_segments(base) if g is not None)
    with pytest.raises(ValueError, match="must divide"):
        dataclasses.replace(base, segments=too_far)


@pytest.mark.parametrize("base", [ex.sweep_base(), ex.preview_base()], ids=["sweep", "preview"])
def test_each_ablation_changes_exactly_its_field(base: xl.XceptionConfig) -> None:
    points = ex.ablations(base)
    reference = dataclasses.asdict(base)
    assert points[0].name == "base" and points[0].config == base
    segments = [g for g in ex.spectrum_segments(base) if g is not None]
    assert [p.name for p in points[1:]] == [
        "residual=False",
        "activation=relu",
        "activation=elu",
        *[f"segments={g}" for g in segments],
    ]
    for point in points:
        changed = {k: v for k, v in dataclasses.asdict(point.config).items() if reference[k] != v}
        assert changed == point.changes
        assert len(point.experiments()) == (3 if point.name == "base" else 1)


def test_ablations_reject_a_base_that_is_already_ablated() -> None:
    with pytest.raises(ValueError, match="expected a base with residual=True"):
        ex.ablations(ex.sweep_base().__class__.cifar(residual=False))
    with pytest.raises(ValueError, match="unknown experiment"):
        ex.ablations(ex.sweep_base(), ["depth"])


# ---------------------------------------------------------------- closed-form layout and differences


@pytest.mark.parametrize(
    ("config", "size"),
    [
        (xl.XceptionConfig.cifar(width_multiplier=0.25, middle_blocks=1), 32),
        (xl.XceptionConfig.imagenet(width_multiplier=0.25, middle_blocks=2), 71),
    ],
    ids=["cifar", "imagenet-71px"],
)
def test_separable_layout_matches_the_model(config: xl.XceptionConfig, size: int) -> None:
    model = xl.Xception(config).eval()
    seen: list[tuple[int, int, int, int]] = []
    seps = [m for m in model.modules() if isinstance(m, xl.SeparableConv2d)]
    handles = [m.register_forward_hook(lambda m, i, o: seen.append((i[0].shape[1], *o.shape[1:]))) for m in seps]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    layout = ex.separable_layout(config, size)
    assert [(s.in_channels, s.out_channels, s.height, s.width) for s in layout] == seen


def test_segments_change_only_the_spatial_step_as_the_formulas_say(small_base: xl.XceptionConfig) -> None:
    """segments=g: each separable conv's spatial params go from 9 C to 9 C (C / g); MACs likewise x H W."""
    layout = ex.separable_layout(small_base)
    depthwise = xl.Xception(small_base)
    base_macs = conv_macs(small_base)
    for g in [g for g in ex.spectrum_segments(small_base) if g is not None]:
        config = dataclasses.replace(small_base, segments=g)
        model = xl.Xception(config)
        param_delta = sum(cx.conv_params(s.in_channels, s.in_channels, 3, groups=g) - cx.depthwise_params(s.in_channels, 3) for s in layout)
        assert param_delta == sum(9 * s.in_channels * (s.in_channels // g - 1) for s in layout)
        assert n_params(model) - n_params(depthwise) == param_delta
        mac_delta = sum(
            cx.conv_macs(s.in_channels, s.in_channels, 3, s.height, s.width, groups=g)
            - cx.depthwise_macs(s.in_channels, 3, s.height, s.width)
            for s in layout
        )
        assert conv_macs(config) - base_macs == mac_delta
        # Only the spatial convolutions differ: everything else has the same shapes.
        a, b = depthwise.state_dict(), model.state_dict()
        assert a.keys() == b.keys()
        differing = {k for k in a if a[k].shape != b[k].shape}
        seps = {n: m for n, m in depthwise.named_modules() if isinstance(m, xl.SeparableConv2d)}
        assert differing == {f"{n}.depthwise.weight" for n, m in seps.items() if m.depthwise.in_channels > g}


def _shortcuts(config: xl.XceptionConfig, size: int = 32) -> list[tuple[int, int, int]]:
    """(C_in, C_out, output size) of every block whose shortcut is a 1x1 conv + BN, from the config."""
    c = config.channels
    prev, out = c(config.stem_channels[1]), []
    for channels, stride in zip(config.entry_channels, config.entry_strides):
        size = size if stride == 1 else -(-size // 2)
        if prev != c(channels) or stride != 1:
            out.append((prev, c(channels), size))
        prev = c(channels)
    size = size if config.exit_stride == 1 else -(-size // 2)
    out.append((prev, c(config.exit_channels[0]), size))
    return out


def test_residual_off_removes_exactly_the_shortcut_convs_and_bns(small_base: xl.XceptionConfig) -> None:
    with_res = xl.Xception(small_base)
    without = xl.Xception(dataclasses.replace(small_base, residual=False))
    shortcuts = _shortcuts(small_base)
    assert len(shortcuts) == 4  # three entry blocks and the exit block; the middle flow's are identities
    removed = set(with_res.state_dict()) - set(without.state_dict())
    assert removed == {k for k in with_res.state_dict() if ".shortcut." in k}
    assert not set(without.state_dict()) - set(with_res.state_dict())
    expected = sum(cx.conv_params(cin, cout, 1) + 2 * cout for cin, cout, _ in shortcuts)  # conv + BN weight, bias
    assert n_params(with_res) - n_params(without) == expected
    expected_macs = sum(cx.conv_macs(cin, cout, 1, s, s) for cin, cout, s in shortcuts)
    assert conv_macs(small_base) - conv_macs(without.config) == expected_macs
    assert all(b.shortcut is None for b in without.modules() if isinstance(b, xl.XceptionBlock))


@pytest.mark.parametrize("activation", ["relu", "elu"])
def test_intermediate_activation_changes_outputs_not_params(small_base: xl.XceptionConfig, activation: str) -> None:
    config = dataclasses.replace(small_base, intermediate_activation=activation)
    torch.manual_seed(0)
    base = xl.Xception(small_base).eval()
    other = xl.Xception(config).eval()
    other.load_state_dict(base.state_dict())  # strict: the same tensors, the same shapes
    assert n_params(other) == n_params(base)
    assert conv_macs(config) == conv_macs(small_base)
    kinds = {type(m.intermediate) for m in other.modules() if isinstance(m, xl.SeparableConv2d)}
    assert kinds == {nn.ReLU if activation == "relu" else nn.ELU}
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert not torch.allclose(base.forward_features(x), other.forward_features(x))


def test_complexity_counts_the_built_model(small_base: xl.XceptionConfig) -> None:
    pytest.importorskip("fvcore", reason="the MAC counter; install xception_lib[tools]")
    cost = ex.complexity(small_base)
    assert cost["params"] == n_params(xl.Xception(small_base))
    assert cost["macs"] == cx.count_macs(xl.Xception(small_base), (1, 3, 32, 32))
    assert cost["macs"] > conv_macs(small_base)  # fvcore adds batch norm and pooling


def test_measure_step_time_is_positive_and_leaves_global_rng_alone(small_base: xl.XceptionConfig) -> None:
    state = torch.random.get_rng_state()
    t = ex.measure_step_time(small_base, batch_size=4, warmup=1, steps=2)
    assert t > 0
    assert torch.equal(state, torch.random.get_rng_state())
    with pytest.raises(ValueError, match="batch_size >= 1"):
        ex.measure_step_time(small_base, batch_size=0)


# ---------------------------------------------------------------- sizing


def test_size_sweep_fits_the_budget_with_matched_epochs() -> None:
    times = [0.01, 0.02, 0.08]  # seconds per step of three configs
    kw = dict(seeds=3, train_size=50_000, test_size=10_000, batch_size=500, max_epochs=100)
    size = ex.size_sweep(times, budget_s=480, **kw)
    per_epoch = 3 * sum(times) * (100 + 20 / 3)
    fixed = 3 * 3 * 3.0
    assert size.epochs == int((480 - fixed) // per_epoch) and size.train_subset is None
    assert size.predicted_s <= 480 < size.predicted_s + per_epoch
    assert ex.size_sweep([2 * t for t in times], budget_s=480, **kw).epochs == size.epochs // 2
    assert ex.size_sweep(times, budget_s=480, **{**kw, "max_epochs": 3}).epochs == 3
    tiny = ex.size_sweep(times, budget_s=30, **kw)  # not even one epoch fits: a subset
    assert tiny.epochs == 1 and 0 < tiny.train_subset < 50_000 and tiny.train_subset % 500 == 0
    assert tiny.predicted_s <= 30
    with pytest.raises(ValueError, match="seeds >= 1"):
        ex.size_sweep(times, budget_s=480, **{**kw, "seeds": 0})


# ---------------------------------------------------------------- the runner and its records (real CIFAR-10)

DATA = os.environ.get("XCEPTION_DATA") or str(REPO.parent / "shared" / "data")


@pytest.fixture(scope="module")
def cifar():
    if not Path(DATA).exists():
        pytest.skip(f"no CIFAR-10 copy at {DATA}; set XCEPTION_DATA")
    return xl.data.load_cifar("cifar10", root=DATA)


@pytest.fixture(scope="module")
def tiny_record(cifar) -> dict:
    """Two experiments x two seeds of the preview base, 2 steps of 32 real images each."""
    lines: list[str] = []
    cfg = ex.preview_train_config("cpu", train_subset=64, test_subset=64, batch_size=32)
    record = ex.run_ablations(
        cifar,
        cfg,
        device="cpu",
        base=ex.preview_base(),
        seeds=2,
        experiments=["residual", "segments"],
        preview=True,
        command="pytest tiny run",
        timing=(0, 1),
        log=lines.append,
    )
    record["_log"] = lines
    return record


def test_runner_records_every_config_and_seed(tiny_record: dict) -> None:
    record = copy.deepcopy(tiny_record)
    record.pop("_log")
    ex.validate_record(record)
    names = [p.name for p in ex.ablations(ex.preview_base(), ["residual", "segments"])]
    assert names == ["base", "residual=False", "segments=1", "segments=2", "segments=4", "segments=8"]
    assert [(r["name"], r["seed"]) for r in record["runs"]] == [(n, s) for s in (0, 1) for n in names]
    assert record["preview"] and record["complete"] and record["environment"]["device"] == "cpu"
    assert record["command"] == "pytest tiny run"
    for run in record["runs"]:
        assert run["train_config"]["train_subset"] == 64 and run["train_config"]["seed"] == run["seed"]
        assert len(run["history"]["test_acc"]) == 1 and len(run["history"]["step_loss"]) == 2  # 64 / 32 steps
        assert run["final_test_acc"] == run["history"]["test_acc"][-1]
        assert run["params"] == n_params(xl.Xception(ex.model_config(run)))
        assert ex.model_config(run) == dataclasses.replace(ex.preview_base(), **run["changes"])
    by_seed = {r["seed"]: r for r in record["runs"] if r["name"] == "base"}
    assert by_seed[0]["history"]["train_loss"] != by_seed[1]["history"]["train_loss"]  # seeds differ
    rows = {row["name"]: row for row in ex.summarize(record)}
    assert all(row["seeds"] == 2 for row in rows.values())
    assert rows["residual=False"]["params"] < rows["base"]["params"] < rows["segments=8"]["params"] < rows["segments=1"]["params"]
    accs = [r["final_test_acc"] for r in record["runs"] if r["name"] == "segments=2"]
    assert rows["segments=2"]["acc_mean"] == pytest.approx(sum(accs) / 2)


def test_record_round_trips_through_json(tiny_record: dict, tmp_path: Path) -> None:
    record = {k: v for k, v in tiny_record.items() if k != "_log"}
    path = tmp_path / "preview.json"
    ex.save_record(record, path)
    loaded = ex.load_record(path)
    assert json.loads(json.dumps(record)) == loaded
    assert ex.format_summary(loaded).count("\n") == 6  # header + six configs
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left nothing behind


def test_preview_is_never_a_gpu_result(tiny_record: dict, tmp_path: Path) -> None:
    record = {k: v for k, v in tiny_record.items() if k != "_log"}
    cpu_full = {**record, "preview": False}
    for rec in (record, cpu_full):
        with pytest.raises(ValueError, match="reserved for GPU results"):
            ex.save_record(rec, tmp_path / "ablations.json")
    assert not (tmp_path / "ablations.json").exists()
    ex.save_record(record, tmp_path / "preview.json")
    assert ex.load_gpu_record(tmp_path / "preview.json") is None
    assert ex.load_gpu_record(tmp_path / "missing.json") is None
    ex.save_record(cpu_full, tmp_path / "cpu.json")
    assert ex.load_gpu_record(tmp_path / "cpu.json") is None  # measured on a CPU
    as_if_gpu = copy.deepcopy(cpu_full)
    as_if_gpu["environment"]["device"] = "cuda"  # only to check the loader's filter, never written to book/
    ex.save_record(as_if_gpu, tmp_path / "ablations.json")
    assert ex.load_gpu_record(tmp_path / "ablations.json") == json.loads(json.dumps(as_if_gpu))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("command"), "record.command: expected a field"),
        (lambda r: r.update(format="other/1"), "record.format"),
        (lambda r: r["runs"][0].update(final_test_acc=1.5), r"runs\[0\].final_test_acc: expected a fraction"),
        (lambda r: r["runs"][1].update(params="many"), r"runs\[1\].params: expected an integer"),
        (lambda r: r["runs"][0]["history"]["test_acc"].append(0.5), r"runs\[0\].history: expected non-empty per-epoch lists"),
        (lambda r: r["runs"][2]["changes"].update(segments=4), r"runs\[2\].changes.segments"),
        (lambda r: r["runs"][0]["model_config"].update(segments=3), r"runs\[0\].model_config: not a valid XceptionConfig"),
        (lambda r: r["environment"].pop("device_name"), "record.environment.device_name"),
    ],
)
def test_validation_names_the_bad_field(tiny_record: dict, mutate, message: str) -> None:
    record = copy.deepcopy({k: v for k, v in tiny_record.items() if k != "_log"})
    mutate(record)
    with pytest.raises(ValueError, match=message):
        ex.validate_record(record)


def test_figures_draw_the_record(tiny_record: dict) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = ex.plot_experiment(tiny_record, "residual")
    curves, finals = fig.axes
    assert [line.get_label() for line in curves.get_lines()] == ["residual=True", "residual=False"]
    assert len(finals.patches) == 2  # one bar per config
    plt.close(fig)
    fig = ex.plot_spectrum(tiny_record)
    points = fig.axes[0].get_lines()[0].get_xdata()
    assert list(points) == [0, 1, 2, 3, 4]  # log2 of 1, 2, 4, 8 segments, then depthwise
    plt.close(fig)


def test_command_line_writes_a_preview_and_refuses_misuse(cifar, tmp_path: Path) -> None:
    out = tmp_path / "cli-preview.json"
    args = ["ablations", "--preview", "--out", str(out), "--data-root", DATA, "--experiments", "residual"]
    args += ["--seeds", "1", "--train-subset", "32", "--test-subset", "32", "--no-progress"]
    assert ex.main(args) == 0
    record = ex.load_record(out)
    assert record["command"] == "python -m xception_lib.chapters.experiments " + " ".join(args)
    assert [r["name"] for r in record["runs"]] == ["base", "residual=False"] and record["preview"]
    assert ex.main(["ablations", "--preview", "--out", str(tmp_path / "ablations.json")]) == 2
    if not torch.cuda.is_available():
        assert ex.main(["cifar10", "--out", str(tmp_path / "cifar10.json")]) == 2  # no GPU, no --preview


def test_train_run_reports_every_epoch_as_a_valid_partial_entry(cifar) -> None:
    seen: list[dict] = []
    cfg = ex.preview_train_config("cpu", epochs=2, train_subset=64, test_subset=32, batch_size=32)
    run = ex.train_run("base", ex.preview_base(), cfg, cifar, device="cpu", step_time_s=0.1, on_epoch=seen.append)
    assert [len(entry["history"]["test_acc"]) for entry in seen] == [1, 2]
    record = ex.new_record("cifar10", cifar, "cpu", preview=True, command="pytest")
    for entry in seen:  # each would be a valid record of a run cut short after that epoch
        ex.validate_record({**record, "runs": [entry]})
    assert seen[-1]["final_test_acc"] == run["final_test_acc"]
    assert seen[0]["wall_time_s"] < seen[1]["wall_time_s"] <= run["wall_time_s"]


def test_effects_are_differences_from_the_base_with_their_standard_error(tiny_record: dict) -> None:
    rows = {r["name"]: r for r in ex.summarize(tiny_record)}
    effect = {e["name"]: e for e in ex.effects(tiny_record)}
    assert set(effect) == set(rows) - {"base"}
    a, b = rows["residual=False"], rows["base"]
    e = effect["residual=False"]
    assert e["delta"] == pytest.approx(a["acc_mean"] - b["acc_mean"])
    assert e["se"] == pytest.approx((a["acc_std"] ** 2 / 2 + b["acc_std"] ** 2 / 2) ** 0.5)
    assert e["macs_ratio"] == pytest.approx(a["macs"] / b["macs"]) and e["macs_ratio"] < 1  # no shortcut convs
    assert effect["segments=1"]["params_ratio"] > 1  # regular spatial convolutions
    table = ex.format_effects({"first": tiny_record, "again": tiny_record})
    assert table.splitlines()[0].split()[:3] == ["vs", "base", "first"]
    assert len(table.splitlines()) == 1 + len(effect)
    one_seed = {**tiny_record, "runs": [r for r in tiny_record["runs"] if r["seed"] == 0]}
    assert all(e["se"] != e["se"] for e in ex.effects(one_seed))  # NaN: no spread from one seed
    with pytest.raises(ValueError, match="'base'"):
        ex.effects({**tiny_record, "runs": [r for r in tiny_record["runs"] if r["name"] != "base"]})


def test_reference_summary_reads_the_goal_off_the_history(cifar) -> None:
    cfg = ex.preview_train_config("cpu", epochs=2, train_subset=64, test_subset=32, batch_size=32)
    run = ex.train_run("xception_cifar", ex.preview_base(), cfg, cifar, device="cpu", step_time_s=0.1)
    record = {**ex.new_record("cifar10", cifar, "cpu", preview=True, command="pytest"), "runs": [run], "complete": True}
    summary = ex.reference_summary(record, target_acc=0.0, target_s=1e6)
    assert summary["met_accuracy"] and summary["met_time"] and summary["epochs"] == 2
    assert summary["best_test_acc"] == max(run["history"]["test_acc"])
    assert summary["seconds_per_epoch"] == pytest.approx(run["wall_time_s"] / 2)
    assert not ex.reference_summary(record, target_acc=1.01)["met_accuracy"]
    with pytest.raises(ValueError, match="cifar10"):
        ex.reference_summary({**record, "experiment": "ablations"})


def test_readme_quotes_the_recorded_gpu_results() -> None:
    """The README's GPU table is typed by hand: hold it to the committed records."""
    results = REPO / "book" / "results"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    reference = ex.load_gpu_record(results / "cifar10.json")
    sweep = ex.load_gpu_record(results / "ablations.json")
    if reference is None or sweep is None:
        pytest.skip("no recorded GPU results in book/results")
    assert f"**{100 * reference['runs'][0]['final_test_acc']:.2f}%**" in readme
    assert f"**{reference['runs'][0]['wall_time_s']:.0f} s**" in readme
    effect = {e["name"]: e for e in ex.effects(sweep)}
    for name, label in (("residual=False", "residual off"), ("activation=relu", "ReLU"), ("activation=elu", "ELU")):
        e = effect[name]
        assert f"{label} {100 * e['delta']:.1f} ± {100 * e['se']:.1f}" in readme, name


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the smoke run would pass and train")
def test_gpu_session_script_stops_at_its_smoke_run_without_a_gpu(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "XCEPTION_COMMIT": "test"}
    done = subprocess.run(
        ["bash", str(REPO / "tools" / "gpu_session.sh"), "60"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    log = (tmp_path / "out" / "session.log").read_text()
    assert done.returncode == 3, done.stdout + done.stderr
    assert "smoke run failed: stopping" in log and "stage 1" not in log
    assert not list((tmp_path / "out").glob("*.json"))  # nothing recorded from a failed smoke run


def test_a_budgeted_sweep_records_how_it_was_sized(cifar) -> None:
    """The GPU command sizes the sweep to a budget; this path once crashed (budget_s recorded twice)."""
    cfg = ex.preview_train_config("cpu", train_subset=64, test_subset=32, batch_size=32)
    record = ex.run_ablations(
        cifar, cfg, device="cpu", base=ex.preview_base(), seeds=1, experiments=["residual"],
        budget_s=600.0, max_epochs=2, preview=True, command="pytest", timing=(0, 1), log=lambda _line: None,
    )
    sizing = record["sizing"]
    assert sizing["sweep_budget_s"] == 600.0 and 0 < sizing["budget_s"] <= 600.0  # what was left for the runs
    assert sizing["epochs"] == 2 and all(len(r["history"]["test_acc"]) == 2 for r in record["runs"])
    assert record["complete"] and sizing["predicted_s"] > 0 and sizing["total_s"] > 0
    ex.validate_record(record)
