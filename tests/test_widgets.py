"""The widget panel, driven from code: set the controls, press Run, read what it shows."""

import re
from pathlib import Path

import matplotlib
import pytest

from baeraser_lib.lab.ablations import AblationBench, DefenseSuite
from baeraser_lib.config import AttackConfig, TrainConfig
from baeraser_lib.data import load_experiment_data, seeded_subset
from baeraser_lib.defenses.recovery import RecoveryConfig
from baeraser_lib.defenses.unlearning import UnlearnConfig
from baeraser_lib.lab.widgets import STEPS, Choice, DefensePanel, bench_runner, suite_for

matplotlib.use("Agg")


def shown_numbers(panel, column):
    """The values of `column` in the panel's HTML table, newest row first."""
    head = re.findall(r"<th>(.*?)</th>", panel.table.value)
    rows = re.findall(r"<tr>(.*?)</tr>", panel.table.value.split("<tbody>")[1])
    return [float(re.findall(r"<td>(.*?)</td>", r)[head.index(column)]) for r in rows]


class StubRunner:
    """ASR after falls with smaller β/α and more epochs; accuracy falls with smaller β/α."""

    def __init__(self):
        self.choices, self.steps = [], []

    def __call__(self, choice, step):
        self.choices.append(choice)
        for label in ("victim", "pool", "defense", "scoring"):
            step(label)
            self.steps.append(label)
        asr = min(1.0, choice.beta_over_alpha / 100) / choice.iterations
        acc = 0.9 - 0.1 / (1 + choice.beta_over_alpha)
        return {"before": {"clean_acc": 0.9, "asr": 1.0}, "after": {"clean_acc": acc, "asr": asr},
                "seconds": 0.1, "curve": [{"epoch": 0, "asr": 1.0, "clean_acc": 0.9},
                                          {"epoch": choice.iterations, "asr": asr, "clean_acc": acc}]}


def test_pressing_run_passes_the_controls_and_shows_the_new_numbers():
    runner = StubRunner()
    panel = DefensePanel(runner, attacks=["badnets", "imc"], holding_ratios=[0.01, 0.05], iterations=2)
    assert panel.rows == [] and "<tbody></tbody>" in panel.table.value
    panel.attack.value, panel.defense.value = "imc", "baeraser"
    panel.beta_over_alpha.value, panel.holding_ratio.value, panel.iterations.value = 100.0, 0.01, 2
    panel.button.click()
    assert runner.choices[-1] == Choice("imc", "baeraser", 100.0, 0.01, 2)
    assert panel.bar.value == STEPS and panel.bar.description == "done" and not panel.button.disabled
    assert shown_numbers(panel, "asr") == [0.5]
    first_acc = shown_numbers(panel, "clean_acc")[0]

    panel.beta_over_alpha.value, panel.iterations.value = 1e-4, 10  # erase harder
    panel.button.click()
    assert runner.choices[-1].beta_over_alpha == pytest.approx(1e-4) and runner.choices[-1].iterations == 10
    asr = shown_numbers(panel, "asr")
    acc = shown_numbers(panel, "clean_acc")
    assert len(asr) == 2 and asr[0] < asr[1]  # newest first: lower ASR ...
    assert acc[0] < first_acc  # ... and lower accuracy, as the stub's trade-off says
    assert shown_numbers(panel, "der")[0] == pytest.approx(panel.rows[-1]["der"], abs=5e-5)
    assert shown_numbers(panel, "beta_over_alpha") == [1e-4, 100.0]
    curve_axes, runs_axes = panel.figure.axes  # redrawn: this run's curve, and one point per run so far
    assert list(curve_axes.lines[0].get_ydata()) == pytest.approx([1.0, panel.rows[-1]["asr"]])
    assert len(runs_axes.collections) == 2


def test_a_failing_run_is_reported_in_the_panel():
    def broken(choice, step):
        step("victim")
        raise FileNotFoundError("no cached victim")

    panel = DefensePanel(broken, attacks=["badnets"])
    assert panel.run() is None
    assert panel.error == "FileNotFoundError: no cached victim" and "no cached victim" in panel.table.value
    assert panel.bar.description == "failed" and not panel.button.disabled and panel.rows == []


def test_suite_for_applies_the_choice_to_every_defense():
    suite = suite_for(Choice("badnets", "nad", 0.01, 0.05, 7), DefenseSuite(unlearn=UnlearnConfig(alpha=2.0)))
    assert suite.unlearn.beta == pytest.approx(0.02) and suite.unlearn.epochs == 7 and suite.unlearn.select == "last"
    assert suite.finetune.epochs == suite.fineprune.finetune.epochs == suite.nad.student.epochs == 7
    assert suite.nad.teacher.epochs == 7


def test_bad_panel_input_is_refused_when_built():
    from baeraser_lib.errors import ConfigError

    with pytest.raises(ConfigError, match="holding_ratio"):
        DefensePanel(StubRunner(), attacks=["badnets"], holding_ratios=[0.01, 0.05], holding_ratio=0.1)
    with pytest.raises(ConfigError, match="β/α"):
        DefensePanel(StubRunner(), attacks=["badnets"], beta_over_alpha=1e3)
    with pytest.raises(ConfigError, match="iterations"):
        DefensePanel(StubRunner(), attacks=["badnets"], iterations=50)


def test_the_panel_over_a_real_bench(fashion_root, tmp_path):
    data = load_experiment_data("fashion_mnist", fashion_root, holding_ratio=0.25)
    bench = AblationBench(data, TrainConfig(model="small_cnn", width=4, epochs=2, batch_size=32, lr=0.05),
                          AttackConfig(poison_rate=0.2), RecoveryConfig(steps_per_stage=4, mask_steps=8), tmp_path,
                          [0.2, 0.25], progress=False)
    panel = DefensePanel(bench_runner(bench, curve_images=60, progress=False), attacks=["badnets"],
                         holding_ratios=list(bench.holdings), holding_ratio=0.25, iterations=1)
    panel.defense.value = "baeraser"
    panel.button.click()
    assert panel.error is None, panel.error
    row = panel.rows[-1]
    victim = bench.victim()
    shown = bench.score(victim.model, victim, on=seeded_subset(bench.evaluation, 60, bench.data.seed))
    assert row["asr_before"] == shown["asr"] and row["clean_acc_before"] == shown["clean_acc"]
    assert 0 <= row["asr"] <= 1 and 0 <= row["clean_acc"] <= 1
    assert len(list(tmp_path.glob("pools/*/pool.safetensors"))) == 1  # BAERASER recovered (and cached) a pool
    assert [c["epoch"] for c in row["curve"]][0] == 0
    panel.defense.value = "finetune"
    panel.iterations.value = 2
    panel.button.click()
    assert panel.error is None and len(panel.rows) == 2 and panel.rows[-1]["defense"] == "finetune"
    assert shown_numbers(panel, "clean_acc_before")[0] == pytest.approx(row["clean_acc_before"], abs=5e-5)
    panel.holding_ratio.options = [("50%", 0.5)]  # a ratio the bench has no D_h for: a clear error, no run
    panel.button.click()
    assert "not in the bench" in panel.error and len(panel.rows) == 2


def test_the_panel_cell_of_notebook_04_needs_only_the_set_up_cells():
    """Run the parameters and set-up cells, then the panel's own cell: every name it reads is
    defined by then (no sweep has to run first; it once read `ref_ratio` from a sweep cell)."""
    import ast
    import builtins

    import jupytext

    nb = jupytext.read(Path(__file__).resolve().parents[1] / "notebooks" / "04_ablations.py")
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    panel = next(src for src in code if "DefensePanel(" in src and "panel" in src.split("=")[0])

    def assigned(src: str) -> set[str]:
        out = set()
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                out.add(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                out |= {(a.asname or a.name).split(".")[0] for a in node.names}
        return out

    ready = assigned(code[0]) | assigned(code[1]) | assigned(panel) | set(dir(builtins))
    used = {n.id for n in ast.walk(ast.parse(panel)) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    assert used - ready == set(), f"the panel cell reads {sorted(used - ready)} from cells after the set-up"
