"""The benchmark harness, its layer arithmetic, its JSON schema and command, and the
performance changes to the model (which must not change a single number)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

import xception_lib as xl
from xception_lib.chapters import bench
from xception_lib import complexity as cx

# ------------------------------------------------------------------ timing


def test_time_interleaved_runs_warmup_then_rounds_in_turn() -> None:
    calls: list[str] = []
    cases = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    out = bench.time_interleaved(cases, rounds=3, warmup=1)
    assert calls == ["a", "b"] * 4  # interleaved: A B A B ..., warm-up included
    assert set(out) == {"a", "b"}
    for m in out.values():
        assert len(m.raw_times) == 3 and m.median > 0 and m.iqr >= 0


def test_time_interleaved_rejects_zero_rounds() -> None:
    with pytest.raises(ValueError, match="rounds >= 1"):
        bench.time_interleaved({"a": lambda: None}, rounds=0)


def test_paired_ratio_is_round_by_round() -> None:
    # B takes twice A's time in every round, even though both drift by 4x.
    med, q1, q3 = bench.paired_ratio([1.0, 2.0, 4.0], [2.0, 4.0, 8.0])
    assert (med, q1, q3) == (2.0, 2.0, 2.0)
    med, q1, q3 = bench.paired_ratio([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])
    assert med == 2.5 and q1 < med < q3
    with pytest.raises(ValueError, match="equally long"):
        bench.paired_ratio([1.0], [1.0, 2.0])


# ------------------------------------------------------------------ layer arithmetic


@pytest.mark.parametrize("kind", bench.LAYER_KINDS)
def test_layer_case_macs_match_fvcore(kind: str) -> None:
    case = bench.LayerCase(kind, 16, 9)
    assert case.macs(batch_size=2) == cx.count_macs(case.module(), (2, 16, 9, 9))


@pytest.mark.parametrize("kind", bench.LAYER_KINDS)
def test_layer_case_bytes_are_input_weights_output(kind: str) -> None:
    case = bench.LayerCase(kind, 16, 9)
    conv = case.module()
    x = torch.zeros(3, 16, 9, 9)
    expected = 4 * (x.numel() + conv.weight.numel() + conv(x).numel())
    assert case.bytes_moved(batch_size=3) == expected
    assert case.intensity(batch_size=3) == case.macs(3) / expected


@pytest.mark.parametrize("channels,size", bench.LAYER_SHAPES)
def test_depthwise_has_the_lowest_arithmetic_intensity(channels: int, size: int) -> None:
    dw, pw, reg = (bench.LayerCase(k, channels, size).intensity(2) for k in ("depthwise", "pointwise", "regular"))
    assert dw < 2 < pw < reg  # depthwise: about 1 MAC per byte, whatever the width


def test_layer_case_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        bench.LayerCase("dilated", 8, 8).module()
    with pytest.raises(ValueError, match="unknown layer kind"):
        bench.layer_cases(kinds=["dilated"])


# ------------------------------------------------------------------ runs and schema


@pytest.fixture(scope="module")
def small_results() -> dict:
    """A real (tiny) run: two small layers and MobileNetV2, batch 1, one round."""
    skipped: list[dict[str, str]] = []
    layers = bench.layer_benchmarks(
        [bench.LayerCase("depthwise", 16, 8), bench.LayerCase("pointwise", 16, 8)],
        batch_size=1, variants=["fp32", "channels_last", "compile"], rounds=2, skipped=skipped,
    )
    models = bench.model_benchmarks(["mobilenet_v2"], batch_size=1, rounds=1, count_macs=True, skipped=skipped)
    return {
        "schema": bench.SCHEMA,
        "environment": xl.provenance.environment("cpu"),
        "settings": {"device": "cpu", "quick": True, "batch_size": 1, "rounds": 1, "threads": torch.get_num_threads()},
        "models": models,
        "layers": layers,
        "roofline": bench.roofline(matrix_size=256, copy_mib=4, rounds=2),
        "skipped": skipped,
    }


def test_small_run_validates_and_has_a_row_per_case(small_results: dict) -> None:
    bench.validate_results(small_results)
    assert [(r["mode"], r["variant"]) for r in small_results["models"]] == [("forward", "fp32"), ("train", "fp32")]
    assert len(small_results["layers"]) == 4  # 2 cases x (fp32, channels_last)
    for row in small_results["layers"]:
        assert row["gmacs_per_s"] == pytest.approx(row["macs"] / row["median_s"] / 1e9)
    mobilenet_macs = cx.count_macs(xl.bench.build_model("mobilenet_v2")[0], (1, 3, 224, 224))
    assert small_results["models"][0]["macs_per_image"] == mobilenet_macs
    assert {"what": "layers/compile", "reason": bench.variant_support("compile", "cpu")} in small_results["skipped"]


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda r: r.update(schema="other/0"), "schema"),
        (lambda r: r["environment"].pop("commit"), "environment: missing 'commit'"),
        (lambda r: r["settings"].pop("threads"), "settings: missing 'threads'"),
        (lambda r: r["models"][0].update(median_s=-1.0), r"models\[0\].median_s"),
        (lambda r: r["models"][0].update(mode="backward"), r"models\[0\].mode"),
        (lambda r: r["layers"][1]["times_s"].pop(), r"layers\[1\].times_s"),
        (lambda r: r["layers"][0].update(variant="int8"), r"layers\[0\].variant"),
        (lambda r: r["roofline"].update(bandwidth_gb_per_s=0), "roofline.bandwidth_gb_per_s"),
        (lambda r: r["roofline"].pop("compute_from"), "roofline.compute_from"),
        (lambda r: r.update(skipped=[{"what": "x"}]), "skipped"),
    ],
)
def test_validate_results_names_what_is_wrong(small_results: dict, corrupt, message: str) -> None:
    broken = copy.deepcopy(small_results)
    corrupt(broken)
    with pytest.raises(ValueError, match=message):
        bench.validate_results(broken)


def test_save_load_and_recorded(small_results: dict, tmp_path) -> None:
    bench.save(small_results, tmp_path / "bench_gpu_test.json")
    bench.save(small_results, tmp_path / "bench_cpu_other.json")
    (tmp_path / "bench_gpu_broken.json").write_text(json.dumps({"schema": bench.SCHEMA}))
    assert bench.load(tmp_path / "bench_gpu_test.json") == json.loads(json.dumps(small_results))
    with pytest.raises(ValueError, match="invalid benchmark results"):
        bench.recorded(tmp_path)  # the broken file is reported, not silently dropped
    (tmp_path / "bench_gpu_broken.json").unlink()
    assert len(bench.recorded(tmp_path)) == 1


def test_unsupported_variants_are_skipped_with_a_reason() -> None:
    assert bench.variant_support("fp32", "cpu") is None
    assert bench.variant_support("channels_last", "cpu") is None
    assert "--compile" in bench.variant_support("compile", "cpu")
    assert bench.variant_support("compile", "cpu", compile=True) is None
    fp16_cpu = getattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", lambda: False)()
    assert (bench.variant_support("fp16", "cpu") is None) == fp16_cpu
    with pytest.raises(ValueError, match="variant must be one of"):
        bench.variant_support("int8", "cpu")


def test_speed_ratio_and_find() -> None:
    rows = [
        {"model": "a", "mode": "train", "variant": "fp32", "median_s": 1.0, "times_s": [1.0, 1.0, 2.0]},
        {"model": "b", "mode": "train", "variant": "fp32", "median_s": 2.0, "times_s": [2.0, 2.0, 2.0]},
    ]
    r = bench.speed_ratio({"models": rows}, "a", "b")
    assert r["ratio"] == 2.0 and r["paired_median"] == 2.0 and r["paired_q1"] == 1.5
    with pytest.raises(ValueError, match="exactly one row"):
        bench.find(rows, model="c")


def test_model_benchmarks_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        bench.model_benchmarks(["vgg16"])
    with pytest.raises(ValueError, match="variant_models must be some of"):
        bench.model_benchmarks(["mobilenet_v2"], variant_models=["resnet50"])
    with pytest.raises(ValueError, match="model must be one of"):
        bench.build_model("vgg16")


def test_format_results_and_plots(small_results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    text = bench.format_results(small_results)
    assert "MobileNetV2" in text and "depthwise 16@8x8" in text
    assert "skipped layers/compile" in text
    ax = bench.plot_roofline(small_results)
    assert len(ax.collections) == 2  # one scatter per layer kind present (depthwise, pointwise)
    ax = bench.plot_models(small_results, mode="train")
    assert len(ax.collections) == 1
    axes = bench.plot_variants(small_results)
    assert len(axes[0].patches) == 2  # channels_last bars for the two layers; no model variants here


def test_separable_shares_and_variant_speedups(small_results: dict) -> None:
    (share,) = bench.separable_shares(small_results)
    assert share["mac_share"] == pytest.approx(9 / (9 + 16))  # 9 C HW against C^2 HW, C = 16
    dw = bench.find(small_results["layers"], kind="depthwise", variant="fp32")
    pw = bench.find(small_results["layers"], kind="pointwise", variant="fp32")
    assert share["time_share"] == pytest.approx(dw["median_s"] / (dw["median_s"] + pw["median_s"]))
    speedups = bench.variant_speedups(small_results)
    assert [(s["case"], s["variant"]) for s in speedups] == [
        ("depthwise 16@8", "channels_last"),
        ("pointwise 16@8", "channels_last"),
    ]
    cl = bench.find(small_results["layers"], kind="depthwise", variant="channels_last")
    assert speedups[0]["speedup"] == pytest.approx(dw["median_s"] / cl["median_s"])


def test_format_results_filters_variants(small_results: dict) -> None:
    text = bench.format_results(small_results, ["layers"], variants=["fp32"], header=False)
    assert "channels_last" not in text and text.count("16@8x8") == 2
    with pytest.raises(ValueError, match="unknown section"):
        bench.format_results(small_results, ["gpu"])


def test_command_writes_valid_json(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    code = bench.main(
        ["--models", "mobilenet_v2", "--variant-models", "--no-layers", "--rounds", "1", "--batch-size", "1",
         "--output", str(out)]
    )
    assert code == 0
    results = bench.load(out)
    assert results["layers"] == [] and results["roofline"] is None
    assert {r["mode"] for r in results["models"]} == {"forward", "train"}
    assert "MobileNetV2" in capsys.readouterr().out


# ------------------------------------------------------------------ speed changes keep the numbers


@pytest.mark.parametrize("kernel,stride", [(1, 2), (2, 2), (3, 1), (3, 2), (3, 3), (4, 2), (5, 2)])
def test_same_max_pool_equals_explicit_padding(kernel: int, stride: int) -> None:
    """MaxPool2dSame uses max_pool2d's own padding (and ceil_mode) instead of an explicit
    -inf pad where that is equivalent: outputs and gradients must be identical."""
    pool = xl.MaxPool2dSame(kernel, stride)
    gen = torch.Generator().manual_seed(0)
    for h, w in [(1, 1), (4, 5), (7, 7), (19, 38), (37, 74), (147, 8)]:
        x = torch.randn(2, 3, h, w, generator=gen, requires_grad=True)
        ref_x = x.detach().clone().requires_grad_()
        (top, bottom), (left, right) = pool._pad(h), pool._pad(w)
        ref = F.max_pool2d(F.pad(ref_x, (left, right, top, bottom), value=float("-inf")), kernel, stride)
        out = pool(x)
        assert out.shape == ref.shape and torch.equal(out, ref), (h, w)
        grad = torch.randn(out.shape, generator=gen)
        out.backward(grad)
        ref.backward(grad)
        assert torch.equal(x.grad, ref_x.grad), (h, w)
