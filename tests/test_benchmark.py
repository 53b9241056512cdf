"""The benchmark harness (``xception_lib.benchmark``): layer arithmetic, timed runs within budgets, typed
records checked on the way in and written atomically."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

import xception_lib as xl
from xception_lib import benchmark, timing
from xception_lib import complexity as cx

# ------------------------------------------------------------------ layer arithmetic


@pytest.mark.parametrize("kind", benchmark.LAYER_KINDS)
def test_layer_case_macs_match_fvcore(kind: str) -> None:
    case = benchmark.LayerCase(kind, 16, 9)
    assert case.macs(batch_size=2) == cx.count_macs(case.module(), (2, 16, 9, 9))


@pytest.mark.parametrize("kind", benchmark.LAYER_KINDS)
def test_layer_case_bytes_are_input_weights_output(kind: str) -> None:
    case = benchmark.LayerCase(kind, 16, 9)
    conv = case.module()
    x = torch.zeros(3, 16, 9, 9)
    expected = 4 * (x.numel() + conv.weight.numel() + conv(x).numel())
    assert case.bytes_moved(batch_size=3) == expected
    assert case.intensity(batch_size=3) == case.macs(3) / expected


@pytest.mark.parametrize("channels,size", benchmark.LAYER_SHAPES)
def test_depthwise_has_the_lowest_arithmetic_intensity(channels: int, size: int) -> None:
    dw, pw, reg = (benchmark.LayerCase(k, channels, size).intensity(2) for k in ("depthwise", "pointwise", "regular"))
    assert dw < 2 < pw < reg  # depthwise: about 1 MAC per byte, whatever the width


def test_batch_size_raises_the_intensity_of_regular_and_pointwise_only() -> None:
    """What chapter 8's batch-size printout shows: the weights' traffic is shared by more images."""
    for kind, grows in (("regular", True), ("pointwise", True), ("depthwise", False)):
        one, eight = (benchmark.LayerCase(kind, 728, 19).intensity(n) for n in (1, 8))
        assert (eight / one > 1.5) == grows, kind
        assert eight >= one


def test_unknown_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="layer kind: expected one of .*got 'dilated'"):
        benchmark.LayerCase("dilated", 8, 8).module()
    with pytest.raises(ValueError, match="model: expected one of .*got 'vgg16'"):
        benchmark.build_model("vgg16")
    with pytest.raises(ValueError, match="variant: expected one of"):
        benchmark.variant_support("int8", "cpu")


# ------------------------------------------------------------------ runs and records


@pytest.fixture(scope="module")
def small_results() -> benchmark.Results:
    """A real (tiny) run: MobileNetV2 and two small layers, batch 1."""
    results = benchmark.run(models=["mobilenet_v2"], variant_models=[], layers=False, batch_size=1, rounds=2)
    layers = benchmark.layer_benchmarks(
        [benchmark.LayerCase("depthwise", 16, 8), benchmark.LayerCase("pointwise", 16, 8)],
        batch_size=1,
        variants=["fp32", "channels_last"],
        rounds=2,
    )
    roof = benchmark.roofline(matrix_size=256, copy_mib=4, rounds=2)
    return dataclasses.replace(results, layers=tuple(layers), roofline=roof)


def test_small_run_has_a_row_per_case(small_results: benchmark.Results) -> None:
    assert [(r.mode, r.variant) for r in small_results.models] == [("forward", "fp32"), ("train", "fp32")]
    assert [(r.kind, r.variant) for r in small_results.layers] == [
        ("depthwise", "fp32"),
        ("pointwise", "fp32"),
        ("depthwise", "channels_last"),
        ("pointwise", "channels_last"),
    ]
    for row in small_results.layers:
        assert row.gmacs_per_s == pytest.approx(row.macs / row.median_s / 1e9)
        assert row.runs == 2 and row.median_s == timing.Timing(row.times_s).median
    mobilenet_macs = cx.count_macs(benchmark.build_model("mobilenet_v2")[0], (1, 3, 224, 224))
    assert small_results.models[0].macs_per_image == mobilenet_macs
    assert benchmark.Skipped("models/compile", benchmark.variant_support("compile", "cpu")) in small_results.skipped
    assert small_results.settings == benchmark.Settings("cpu", False, 1, 2, torch.get_num_threads())


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda r: r.update(schema="other/0"), "schema"),
        (lambda r: r["environment"].pop("torch"), r"environment"),
        (lambda r: r["settings"].pop("threads"), r"settings: expected every required field"),
        (lambda r: r["settings"].update(quick="yes"), r"settings\.quick: expected true or false"),
        (lambda r: r["models"][0].update(median_s=-1.0), r"models\[0\]\.median_s: expected a finite number"),
        (lambda r: r["models"][0].update(median_s=float("nan")), r"models\[0\]\.median_s"),
        (lambda r: r["models"][0].update(mode="backward"), r"models\[0\]\.mode: expected one of"),
        (lambda r: r["models"][1].update(macs_per_image="3G"), r"models\[1\]\.macs_per_image: expected an integer"),
        (lambda r: r["layers"][1]["times_s"].pop(), r"layers\[1\]\.times_s: expected 2 times"),
        (lambda r: r["layers"][0].update(variant="int8"), r"layers\[0\]\.variant"),
        (lambda r: r["roofline"].update(bandwidth_gb_per_s=0), r"roofline\.bandwidth_gb_per_s"),
        (lambda r: r["roofline"].pop("compute_from"), r"roofline: expected every required field"),
        (lambda r: r.update(skipped=[{"what": "x"}]), r"skipped\[0\]: expected every required field"),
        (lambda r: r.update(layers={}), "layers: expected a list"),
        (lambda r: r.update(models=["not a row"]), r"models\[0\]: expected a JSON object"),
    ],
)
def test_load_names_what_is_wrong(small_results: benchmark.Results, corrupt, message: str, tmp_path) -> None:
    broken = json.loads(benchmark.save(small_results, tmp_path / "some.json").read_text())
    corrupt(broken)
    (tmp_path / "some.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="invalid benchmark results in .*some.json: " + message):
        benchmark.load(tmp_path / "some.json")


def test_save_load_round_trip_and_recorded(small_results: benchmark.Results, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(benchmark, "RECORDS", tmp_path)
    benchmark.save(small_results, tmp_path / "bench_gpu_test.json")
    benchmark.save(small_results, tmp_path / "bench_cpu_other.json")
    assert benchmark.load(tmp_path / "bench_gpu_test.json") == small_results  # typed rows again, tuples and all
    assert benchmark.recorded() == [small_results]
    assert len(benchmark.recorded("bench_*.json")) == 2
    monkeypatch.setattr(benchmark, "RECORDS", tmp_path / "absent")
    assert benchmark.recorded() == []
    monkeypatch.setattr(benchmark, "RECORDS", tmp_path)
    (tmp_path / "bench_gpu_broken.json").write_text(json.dumps({"schema": benchmark.SCHEMA}))
    with pytest.raises(ValueError, match="bench_gpu_broken.json"):
        benchmark.recorded()  # the broken file is reported, not silently dropped
    (tmp_path / "bench_gpu_broken.json").write_text('{"schema": ')
    with pytest.raises(ValueError, match="bench_gpu_broken.json, line 1, column 12: not valid JSON"):
        benchmark.load(tmp_path / "bench_gpu_broken.json")


def test_save_is_atomic_a_failed_write_keeps_the_old_file(small_results, tmp_path: Path, monkeypatch) -> None:
    path = benchmark.save(small_results, tmp_path / "bench.json")
    before = path.read_text()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)  # the rename, the last step of every atomic write
    with pytest.raises(OSError, match="disk full"):
        benchmark.save(small_results, path)
    assert path.read_text() == before and benchmark.load(path) == small_results
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # no temporary file left behind


def test_recorded_defaults_to_the_package_records(small_results: benchmark.Results, tmp_path, monkeypatch) -> None:
    assert benchmark.RECORDS == Path(xl.__file__).parent / "records"
    monkeypatch.setattr(benchmark, "RECORDS", tmp_path)
    benchmark.save(small_results, tmp_path / "bench_gpu_x.json")
    monkeypatch.chdir(tmp_path.parent)  # whatever the working directory
    assert benchmark.recorded() == [small_results]


def test_unsupported_variants_are_skipped_with_a_reason() -> None:
    assert benchmark.variant_support("fp32", "cpu") is None
    assert benchmark.variant_support("channels_last", "cpu") is None
    assert "--compile" in benchmark.variant_support("compile", "cpu")
    assert benchmark.variant_support("compile", "cpu", compile=True) is None
    fp16_cpu = getattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", lambda: False)()
    assert (benchmark.variant_support("fp16", "cpu") is None) == fp16_cpu


def test_benchmarks_check_their_arguments(monkeypatch) -> None:
    monkeypatch.setattr(benchmark, "build_model", lambda name: pytest.fail("a model was built"))
    with pytest.raises(ValueError, match="model: expected one of .*got 'vgg16'"):
        benchmark.run(models=["vgg16"])
    with pytest.raises(ValueError, match="model: expected one of .*got 'vgg'"):
        benchmark.run(models=["mobilenet_v2"], variant_models=["vgg"])
    with pytest.raises(ValueError, match=r"modes: expected some of \('forward', 'train'\)"):
        benchmark.run(modes=["backward"])
    with pytest.raises(ValueError, match=r"batch_size: expected a finite number in \[1, inf\], got 0"):
        benchmark.layer_benchmarks(batch_size=0)
    with pytest.raises(ValueError, match="variant: expected one of"):
        benchmark.layer_benchmarks(variants=["fp8"])
    with pytest.raises(ValueError, match="rounds: expected an integer, got 1.5"):
        benchmark.run(rounds=1.5)
    with pytest.raises(ValueError, match=r"rounds: expected a finite number in \[1, inf\], got 0"):
        benchmark.run(rounds=0)
    with pytest.raises(ValueError, match="not a device"):
        benchmark.check_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available on this machine"):
            benchmark.check_device("cuda")


def test_call_patterns_time_each_layer_both_ways_and_restore_the_threads() -> None:
    layers = {"a": torch.nn.Conv2d(4, 4, 3, padding=1), "b": torch.nn.Conv2d(4, 4, 1)}
    threads = torch.get_num_threads()
    out = benchmark.call_patterns(layers, torch.randn(1, 4, 8, 8), threads=1)
    assert set(out) == {"back to back", "one at a time"} and torch.get_num_threads() == threads
    assert all(set(ways) == {"a", "b"} for ways in out.values())
    assert [len(t.times) for t in out["back to back"].values()] == [10, 10]  # per call: a block's time / 5
    assert [len(t.times) for t in out["one at a time"].values()] == [30, 30]


def test_a_budget_cuts_the_rounds_and_the_rows_say_how_many() -> None:
    rows = benchmark.layer_benchmarks([benchmark.LayerCase("pointwise", 8, 8)], batch_size=1, rounds=50, budget_s=1e-9)
    assert rows[0].runs == len(rows[0].times_s) == 1  # spent after the first round, which always runs
