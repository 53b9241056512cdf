"""The checked exercises: every solution passes its check, a typical wrong answer gets its hint,
an untouched exercise cell is "not attempted", every chapter has its exercises and questions."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xception_lib as xl
from xception_lib import exercises

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = range(1, 10)


def _biases_left_out(simplified):  # the weights only
    segmented = xl.SegmentedInception(6, 12, segments=3)
    with torch.no_grad():
        segmented.pointwise.weight.copy_(torch.cat([t[0].weight for t in simplified.towers]))
        segmented.spatial.weight.copy_(torch.cat([t[2].weight for t in simplified.towers]))
        segmented.pointwise.bias.zero_()
        segmented.spatial.bias.zero_()
    return segmented


def _wrong_separable(x, depthwise, pointwise):  # pointwise first
    return F.conv2d(F.conv2d(x, pointwise), depthwise, padding=1, groups=x.shape[1])


def _no_zero_grad(model, images, labels, optimizer):
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss.item()


def _k_minus_1(logits, labels, eps):
    k = logits.shape[1]
    target = torch.full_like(logits, eps / (k - 1)).scatter(1, labels[:, None], 1 - eps)
    return -(target * logits.log_softmax(1)).sum(1).mean()


def _mean_time(fn, repeats):  # no warm-up, and the mean
    import timeit

    times = timeit.repeat(fn, number=1, repeat=repeats)
    return sum(times) / len(times)


def _whole_head_replaced(model, k):  # the pooling and flattening thrown away with the classifier
    model.head = nn.Linear(model.head.fc.in_features, k)
    return model


def _frozen_in_train_mode(model):  # requires_grad right, batch norms left in training mode
    model.requires_grad_(False)
    model.head.requires_grad_(True)
    model.train()


def _head_in_both_groups(model, lr):
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": list(model.head.parameters()), "lr": lr},
        {"params": trainable, "lr": lr / 10},
    ]


# A typical wrong answer per exercise and a piece of the hint it must get.
WRONG = {
    "ch1.segmented_macs": (lambda c, h, w, s: 9 * c * c * h * w // s, "3x3 step alone"),
    "ch1.crossover": (9, "still costs"),
    "ch1.segmented_params": (64 * 96 + 9 * 24 * 96, "have biases"),
    "ch1.rewrite": (_biases_left_out, "copy the towers' biases"),
    "ch2.separable_params": (9 * 728 + 728 * 1024 + 1024, "no biases"),
    "ch2.strided_macs": ((9 * 728 + 728 * 1024) * 81, "off by the padding"),
    "ch2.separable_forward": (_wrong_separable, "pointwise step first"),
    "ch3.middle_block_params": (3 * (9 * 728 + 728 * 728), "batch norm"),
    "ch3.sizes_224": (
        {
            "stem": 111,
            "entry_flow.block1": 56,
            "entry_flow.block2": 28,
            "entry_flow.block3": 14,
            "middle_flow": 14,
            "exit_flow": 7,
        },
        "second one also removes",
    ),
    "ch3.regular_params": ("from_model_plus", "replace, do not add"),
    "ch4.shares_parameters": (
        lambda m: len(list(m.named_modules())) != len(set(map(id, m.modules()))),
        "remove_duplicate",
    ),
    "ch4.shared_middle_params": ("eight_blocks", "seven blocks"),
    "ch4.smallest_input": (3, "second unpadded"),
    "ch5.train_step": (_no_zero_grad, "zero the gradients"),
    "ch5.label_smoothing": (_k_minus_1, "all K classes"),
    "ch5.pad_crop": (lambda x, dy, dx: x.roll((4 - dy, 4 - dx), dims=(2, 3)), "torch.roll"),
    "ch6.spatial_params": (9 * 256 * 256, "one segment"),
    "ch6.max_segments": (64, "at full width"),
    "ch6.seeds": (math.ceil((2 * 0.15 / 0.2) ** 2), "sqrt(2 / n)"),
    "ch7.grad_cam": (lambda a, g: (g.mean(dim=(1, 2))[:, None, None] * a).sum(0), "ReLU"),
    "ch7.dead_channels": (lambda a: (a == 0).any(dim=3).any(dim=2).any(dim=0), "zero everywhere"),
    "ch7.depthwise_channel": (
        lambda layer, x, c: F.conv2d(x[:, :1], layer.depthwise.weight[c : c + 1], padding=1),
        "channel c",
    ),
    "ch8.depthwise_intensity": (2 * 9 * 728 * 361 / (4 * (2 * 728 * 361 + 9 * 728)), "not FLOPs"),
    "ch8.ridge_width": (80, "large-map approximation"),
    "ch8.median_time": (_mean_time, "median, not the mean"),
    "ch9.new_head": (_whole_head_replaced, "replace only its last layer"),
    "ch9.prepare": (_frozen_in_train_mode, "running statistics"),
    "ch9.param_groups": (_head_in_both_groups, "in both groups"),
    "ch9.count_trainable": (lambda model: sum(p.numel() for p in model.parameters()), "frozen ones included"),
}


def _wrong_answer(name: str):
    answer, hint = WRONG[name]
    if answer == "from_model_plus":  # regular convolutions added beside the separable ones
        model = xl.xception()
        seps = [m for m in model.modules() if isinstance(m, xl.SeparableConv2d)]
        answer = sum(p.numel() for p in model.parameters()) + sum(
            9 * m.depthwise.in_channels * m.pointwise.out_channels for m in seps
        )
    elif answer == "eight_blocks":
        answer = 8 * sum(p.numel() for p in xl.xception().middle_flow.block1.parameters())
    return answer, hint


def test_every_exercise_has_a_wrong_answer():
    assert set(WRONG) == set(exercises.EXERCISES)
    for chapter in CHAPTERS:
        assert len(exercises.names(chapter)) >= 3, chapter


@pytest.mark.parametrize("name", sorted(exercises.EXERCISES))
def test_solution_passes_its_check(name):
    assert exercises.verdict(name, exercises.EXERCISES[name].solution()).status == "right"


@pytest.mark.parametrize("name", sorted(exercises.EXERCISES))
def test_wrong_answer_gets_its_hint(name):
    answer, hint = _wrong_answer(name)
    result = exercises.verdict(name, answer)
    assert result.status == "wrong"
    assert hint in result.message, result.message


@pytest.mark.parametrize("name", sorted(exercises.EXERCISES))
def test_placeholder_is_not_attempted(name):
    assert exercises.verdict(name, ...).status == "not attempted"


def _kept_source_classes(model, k):
    model.head.fc = nn.Linear(model.head.fc.in_features, model.head.fc.out_features)
    return model


def _fresh_network(model, k):
    return xl.Xception(dataclasses.replace(model.config, num_classes=k))


def _config_not_updated(model, k):
    model.head.fc = nn.Linear(model.head.fc.in_features, k)
    return model


def _head_frozen_too(model):
    model.requires_grad_(False)
    model.train()


def _conv_weights_only(model):  # batch norms' weights and biases left trainable
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("head.") or "bn" in name)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def _all_in_eval(model):
    model.requires_grad_(False)
    model.head.requires_grad_(True)
    model.eval()


def _split(model):
    head = {id(p) for p in model.head.parameters()}
    return [p for p in model.parameters() if id(p) in head], [p for p in model.parameters() if id(p) not in head]


def _swapped_lrs(model, lr):
    head, rest = _split(model)
    return [{"params": head, "lr": lr / 10}, {"params": [p for p in rest if p.requires_grad], "lr": lr}]


def _frozen_included(model, lr):
    head, rest = _split(model)
    return [{"params": head, "lr": lr}, {"params": rest, "lr": lr / 10}]


def _one_lr(model, lr):
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]


def _exit_flow_half_missing(model, lr):
    return [
        {"params": list(model.head.parameters()), "lr": lr},
        {"params": list(model.exit_flow.sep2.parameters()), "lr": lr / 10},
    ]


@pytest.mark.parametrize(
    ("name", "answer", "hint"),
    [
        ("ch9.new_head", _kept_source_classes, "one output per source class"),
        ("ch9.new_head", _fresh_network, "trunk's weights changed"),
        ("ch9.new_head", _config_not_updated, "model.config.num_classes"),
        ("ch9.prepare", _head_frozen_too, "froze the new head too"),
        ("ch9.prepare", _conv_weights_only, "batch norms' weights and biases"),
        ("ch9.prepare", _all_in_eval, "whole model is in eval mode"),
        ("ch9.param_groups", _swapped_lrs, "swap them"),
        ("ch9.param_groups", _frozen_included, "frozen parameters"),
        ("ch9.param_groups", _one_lr, "same learning rate"),
        ("ch9.param_groups", _exit_flow_half_missing, "in no group"),
        ("ch9.count_trainable", lambda m: sum(p.numel() for p in m.parameters() if not p.requires_grad), "frozen part"),
        ("ch9.count_trainable", lambda m: len([p for p in m.parameters() if p.requires_grad]), "parameter tensors"),
    ],
)
def test_chapter_9_mistakes_get_their_hints(name, answer, hint):
    """Each likely mistake of transfer learning is named, not only the first one."""
    result = exercises.verdict(name, answer)
    assert result.status == "wrong" and hint in result.message, result.message


def test_chapter_9_checks_leave_the_source_network_alone():
    source = exercises._source()
    before = {k: v.clone() for k, v in source.state_dict().items()}
    for name in exercises.names(9):
        exercises.verdict(name, exercises.EXERCISES[name].solution())
        exercises.verdict(name, _wrong_answer(name)[0])
    after = source.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in source.parameters())


def test_hints_never_contain_the_answer():
    """No message of a wrong answer prints the expected number."""
    for name, ex in exercises.EXERCISES.items():
        expected = ex.expected()
        if isinstance(expected, int) and expected > 9:
            message = exercises.verdict(name, _wrong_answer(name)[0]).message
            assert str(expected) not in message.replace(",", ""), name


def test_check_prints_and_reports_errors(capsys):
    exercises.check("ch2.separable_params", ...)
    assert "not attempted yet" in capsys.readouterr().out
    exercises.check(
        "ch2.separable_params", 752_024 * 0 + sum(p.numel() for p in xl.SeparableConv2d(728, 1024).parameters())
    )
    assert "right" in capsys.readouterr().out

    def broken(x, depthwise, pointwise):
        raise KeyError("oops")

    assert "raised KeyError" in exercises.verdict("ch2.separable_forward", broken).message

    def no_return(x, depthwise, pointwise):
        F.conv2d(x, depthwise, padding=1, groups=x.shape[1])

    assert "forget a `return`" in exercises.verdict("ch2.separable_forward", no_return).message
    with pytest.raises(ValueError, match="no exercise named 'ch99.nothing'"):
        exercises.verdict("ch99.nothing", 1)


def test_a_check_leaves_the_random_state_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    exercises.verdict("ch5.train_step", exercises.EXERCISES["ch5.train_step"].solution())
    assert torch.equal(before, torch.random.get_rng_state())


def test_solution_shows_code_without_the_return():
    shown = exercises.solution("ch2.separable_params")
    assert "separable_params = depthwise + pointwise" in shown.code
    assert "return" not in shown.code and shown.explanation
    assert shown._repr_html_().startswith("<details>")


# ------------------------------------------------------------------ the chapters


def _cells(chapter: int) -> list[dict]:
    (path,) = BOOK.glob(f"0{chapter}_*.ipynb")
    return json.loads(path.read_text())["cells"]


def _src(cell: dict) -> str:
    return "".join(cell["source"])


_CHECK = re.compile(r'^xl\.exercises\.check\("([\w.]+)", (\w+)\)$')


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_has_exercises_each_followed_by_a_check(chapter):
    cells = _cells(chapter)
    exercise_cells = [i for i, c in enumerate(cells) if "exercise" in c["metadata"].get("tags", [])]
    assert len(exercise_cells) >= 3
    checked = []
    for i in exercise_cells:
        match = _CHECK.match(_src(cells[i + 1]).strip())
        assert cells[i + 1]["cell_type"] == "code" and match, _src(cells[i + 1])
        checked.append(match.group(1))
    assert sorted(checked) == sorted(exercises.names(chapter))


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_untouched_exercise_cells_are_not_attempted(chapter):
    """Run each exercise cell as the reader finds it, then its check: "not attempted", no error."""
    cells = _cells(chapter)
    for i, cell in enumerate(cells):
        if "exercise" not in cell["metadata"].get("tags", []):
            continue
        name, variable = _CHECK.match(_src(cells[i + 1]).strip()).groups()  # type: ignore[union-attr]
        namespace = {"xl": xl, "torch": torch, "nn": nn}
        exec(compile(_src(cell), f"chapter {chapter}, cell {i}", "exec"), namespace)
        assert exercises.verdict(name, namespace[variable]).status == "not attempted", name
        ast.parse(_src(cells[i + 2]))  # the solution cell
        assert _src(cells[i + 2]).strip() == f'xl.exercises.solution("{name}")'


# ------------------------------------------------------------------ questions of understanding


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_questions_explain_every_choice(chapter):
    questions = exercises.quiz_questions(chapter)
    assert 3 <= len(questions) <= 5
    for q in questions:
        assert q["type"] == "multiple_choice" and q["question"]
        assert sum(a["correct"] for a in q["answers"]) == 1, q["question"]
        assert len(q["answers"]) >= 3
        assert all(a["feedback"].strip() for a in q["answers"]), q["question"]
    cells = _cells(chapter)
    assert any(_src(c).strip() == f"xl.exercises.quiz({chapter})" for c in cells)


def test_quiz_output_renders_offline():
    """The quiz is text/html plus application/javascript (MyST-NB writes the one as raw HTML, the
    other as a <script>), and nothing in it fetches from the network."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()  # display() publishes rich outputs only inside a shell
    with capture_output() as captured:
        exercises.quiz(2)
    kinds = [set(o.data) for o in captured.outputs]
    assert any("text/html" in k for k in kinds) and any("application/javascript" in k for k in kinds)
    text = "".join(v for o in captured.outputs for v in o.data.values() if isinstance(v, str))
    assert "://" not in text
    assert "Which step comes first" in text or "which step comes first" in text
    with pytest.raises(ValueError, match="ch99.json"):
        exercises.quiz_questions(99)


def test_reachable_as_xl_exercises():
    """The chapters call ``xl.exercises.check`` after ``import xception_lib as xl`` alone, so
    xception_lib/__init__.py must list the module (here it is already imported: ask a fresh process)."""
    import subprocess
    import sys

    code = "import xception_lib as xl; print(xl.exercises.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "xception_lib.exercises", result.stderr[-500:]


@pytest.mark.slow
@pytest.mark.browser
def test_quiz_works_in_a_built_page_offline(tmp_path):
    """The quiz's outputs, rendered by MyST-NB (as the book renders them) into a page, show every
    question in Chromium, answer a click with its explanation, and request nothing."""
    import shutil

    import nbformat
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    from sphinx.cmd.build import build_main

    playwright = pytest.importorskip("playwright.sync_api")
    InteractiveShell.instance()
    with capture_output() as captured:
        exercises.quiz(3)
    cell = nbformat.v4.new_code_cell("xl.exercises.quiz(3)")
    cell.outputs = [nbformat.v4.new_output("display_data", data=o.data) for o in captured.outputs]
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Quiz"), cell]), src / "index.ipynb")
    (src / "conf.py").write_text('extensions = ["myst_nb"]\nnb_execution_mode = "off"\nhtml_theme = "basic"\n')
    assert build_main(["-q", "-b", "html", str(src), str(tmp_path / "html")]) == 0
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    with playwright.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=executable)
        except Exception as error:  # no browser on this machine
            pytest.skip(f"Chromium does not start: {error}")
        page = browser.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto((tmp_path / "html" / "index.html").as_uri())
        page.wait_for_selector(".MCButton")
        questions = exercises.quiz_questions(3)
        assert page.locator(".MCButton").count() == sum(len(q["answers"]) for q in questions)
        page.locator(".MCButton").first.click()
        feedback = page.locator(".Feedback").first.inner_text()
        browser.close()
    assert feedback.strip() in {a["feedback"] for q in questions for a in q["answers"]}
    assert [u for u in requests if not u.startswith("file:")] == []
