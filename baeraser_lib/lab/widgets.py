"""An ipywidgets panel: re-run a defense from the cached victim and pool with other settings.

    panel = DefensePanel(bench_runner(bench, suite), attacks=["badnets", "trojannn", "imc"])
    panel            # in a notebook: sliders, dropdowns, a Run button, a progress bar, table, plot

The panel only collects a `Choice` and hands it to a runner, so it works with any callable
`runner(choice, step) -> dict` (`step(label)` advances the progress bar); `bench_runner` is the
one that unlearns (or fine-tunes, fine-prunes, distils) an `AblationBench`'s cached victim.
Nothing runs until Run is pressed, so a notebook displaying the panel under papermill does not
block; `panel.button.click()` presses it from code.
"""

from __future__ import annotations

import dataclasses
import html
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt

from .ablations import RUNNABLE, AblationBench, DefenseSuite, run_defenses
from ..data import seeded_subset
from ..errors import ConfigError
from ..metrics import der

STEPS = 4  # victim, pool, defense, scoring: the progress bar's units


@dataclass(frozen=True)
class Choice:
    """What the panel's controls say."""

    attack: str
    defense: str
    beta_over_alpha: float
    holding_ratio: float
    iterations: int  # epochs over D_h: unlearning's, the baselines' fine-tuning epochs, NC's unlearning
    # epochs, i-BAU's rounds, SAU's epochs; ANP takes 60 mask updates per unit (its 300 default = 5)


def suite_for(choice: Choice, suite: DefenseSuite) -> DefenseSuite:
    """`suite` with the choice's β/α (α kept) and epochs applied to every defense; BAERASER runs
    all its epochs and returns the last (the raw effect of the settings, no model choice)."""
    ft = dataclasses.replace(suite.finetune, epochs=choice.iterations)
    return DefenseSuite(
        unlearn=dataclasses.replace(suite.unlearn, beta=choice.beta_over_alpha * suite.unlearn.alpha,
                                    epochs=choice.iterations, select="last"),
        finetune=ft,
        fineprune=dataclasses.replace(suite.fineprune, finetune=ft),
        nad=dataclasses.replace(suite.nad, student=dataclasses.replace(suite.nad.student, epochs=choice.iterations),
                                teacher=dataclasses.replace(suite.nad.teacher, epochs=choice.iterations)),
        nc=dataclasses.replace(suite.nc, finetune=ft),
        ibau=dataclasses.replace(suite.ibau, rounds=choice.iterations),
        sau=dataclasses.replace(suite.sau, epochs=choice.iterations),
        anp=dataclasses.replace(suite.anp, iterations=60 * choice.iterations),
    )


def bench_runner(bench: AblationBench, suite: DefenseSuite = DefenseSuite(), curve_images: int | None = 1000,
                 progress: bool = True):
    """A panel runner over `bench`: cached victim (and pool, for BAERASER), the chosen defense with
    the chosen settings, then clean accuracy and ASR on (a fixed part of) the evaluation set, and
    for BAERASER the same after every epoch (plotting only)."""
    evalset = bench.evaluation if curve_images is None else \
        seeded_subset(bench.evaluation, min(curve_images, len(bench.evaluation)), bench.data.seed)

    def run(choice: Choice, step) -> dict:
        if choice.holding_ratio not in bench.holdings:
            raise ConfigError(f"holding ratio {choice.holding_ratio:g} is not in the bench's sweep "
                              f"{sorted(bench.holdings)}")
        if choice.defense not in RUNNABLE:
            raise ConfigError(f"unknown defense {choice.defense!r}; choose from {list(RUNNABLE)}")
        victim = bench.victim(choice.attack)  # checks the attack before loading or training anything
        before = bench.score(victim.model, victim, on=evalset)
        step("victim")
        pool = bench.pool(victim, choice.holding_ratio)[0] if choice.defense == "baeraser" else None
        step("pool")
        curve = []

        def on_epoch(model, epoch):
            figs = bench.score(model, victim, on=evalset)
            curve.append({"epoch": epoch, "clean_acc": figs["clean_acc"], "asr": figs["asr"]})

        repaired = run_defenses(victim.model, bench.holdings[choice.holding_ratio], pool, suite_for(choice, suite),
                                [choice.defense], bench.device, progress=progress, on_epoch=on_epoch,
                                num_classes=bench.data.info.num_classes)[choice.defense]
        step("defense")
        after = bench.score(repaired.model, victim, on=evalset)
        step("scoring")
        return {"before": before, "after": after, "seconds": repaired.seconds, "curve": curve,
                "n_eval": len(evalset)}

    return run


def _fmt(v, column: str = "") -> str:
    if column in ("beta_over_alpha", "holding_ratio"):
        return f"{v:g}"
    if column == "seconds":
        return f"{v:.1f}"
    return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))


class DefensePanel:
    """Dropdowns for attack and defense, sliders for β/α (log), holding ratio and epochs, a Run
    button; each run adds a row to the table and redraws the plots. `rows` holds the results."""

    COLUMNS = ("attack", "defense", "beta_over_alpha", "holding_ratio", "iterations", "clean_acc_before", "clean_acc",
               "asr_before", "asr", "der", "seconds")

    def __init__(self, runner, attacks, defenses=RUNNABLE, holding_ratios=(0.01, 0.02, 0.05, 0.1),
                 beta_over_alpha: float = 1.0, holding_ratio: float | None = None, iterations: int = 5,
                 max_iterations: int = 20):
        import ipywidgets as W

        holding_ratios = sorted(holding_ratios)
        if holding_ratio is not None and holding_ratio not in holding_ratios:
            raise ConfigError(f"holding_ratio {holding_ratio} is not one of the panel's {holding_ratios}")
        if not 1e-4 <= beta_over_alpha <= 1e2:
            raise ConfigError(f"β/α must lie in [1e-4, 1e2] (the slider's range), got {beta_over_alpha}")
        if not 1 <= iterations <= max_iterations:
            raise ConfigError(f"iterations must lie in [1, {max_iterations}], got {iterations}")
        self.runner = runner
        self.attack = W.Dropdown(options=list(attacks), description="attack")
        self.defense = W.Dropdown(options=list(defenses), value=list(defenses)[0], description="defense")
        self.beta_over_alpha = W.FloatLogSlider(value=beta_over_alpha, base=10, min=-4, max=2, step=0.5,
                                                description="β/α", readout_format=".0e")
        self.holding_ratio = W.SelectionSlider(options=[(f"{100 * r:g}%", r) for r in holding_ratios],
                                               value=holding_ratio if holding_ratio in holding_ratios else
                                               holding_ratios[len(holding_ratios) // 2], description="holding")
        self.iterations = W.IntSlider(value=iterations, min=1, max=max_iterations, description="epochs")
        self.button = W.Button(description="Run", button_style="primary", icon="play")
        self.bar = W.IntProgress(value=0, min=0, max=STEPS, description="idle")
        self.rows: list[dict] = []
        self.error: str | None = None
        self.figure = None
        self.table = W.HTML(self._table_html())
        self.plot = W.Output()
        self.log = W.Output()
        self.button.on_click(self.run)
        controls = W.VBox([self.attack, self.defense, self.beta_over_alpha, self.holding_ratio, self.iterations,
                           W.HBox([self.button, self.bar])])
        self.widget = W.VBox([controls, self.table, self.plot, self.log])

    def choice(self) -> Choice:
        return Choice(self.attack.value, self.defense.value, float(self.beta_over_alpha.value),
                      float(self.holding_ratio.value), int(self.iterations.value))

    def run(self, _button=None) -> dict | None:
        """Run the current choice (what the button does); returns the new row, or None on error."""
        choice = self.choice()
        self.button.disabled, self.error = True, None
        self.bar.value, self.bar.description, self.bar.bar_style = 0, "running", ""

        def step(label: str) -> None:
            self.bar.value = min(STEPS, self.bar.value + 1)
            self.bar.description = label

        start = time.perf_counter()
        try:
            with self.log:
                result = self.runner(choice, step)
        except Exception as err:  # shown in the panel: a widget callback has nowhere else to report
            self.error = f"{type(err).__name__}: {err}"
            self.bar.description, self.bar.bar_style = "failed", "danger"
            self.table.value = self._table_html()
            return None
        finally:
            self.button.disabled = False
        b, a = result["before"], result["after"]
        row = {**dataclasses.asdict(choice), "clean_acc_before": b["clean_acc"], "clean_acc": a["clean_acc"],
               "asr_before": b["asr"], "asr": a["asr"],
               "der": der(b["clean_acc"], a["clean_acc"], b["asr"], a["asr"]),
               "seconds": result.get("seconds", time.perf_counter() - start), "curve": result.get("curve", [])}
        self.rows.append(row)
        self.bar.value, self.bar.description, self.bar.bar_style = STEPS, "done", "success"
        self.table.value = self._table_html()
        self._draw()
        return row

    def _table_html(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in self.COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{_fmt(r[c], c)}</td>" for c in self.COLUMNS) + "</tr>"
                       for r in reversed(self.rows))
        err = f"<p style='color:#b00'>{html.escape(self.error)}</p>" if self.error else ""
        return f"{err}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def _draw(self) -> None:
        from IPython.display import clear_output

        row = self.rows[-1]
        with self.plot:
            clear_output(wait=True)
            fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
            if row["curve"]:
                ep = [c["epoch"] for c in row["curve"]]
                ax.plot(ep, [c["asr"] for c in row["curve"]], marker="o", label="ASR")
                ax.plot(ep, [c["clean_acc"] for c in row["curve"]], marker="s", label="clean acc")
                ax.set(xlabel="epoch")
            else:
                ax.bar([0, 1, 3, 4], [row["asr_before"], row["asr"], row["clean_acc_before"], row["clean_acc"]],
                       color=["#999", "C0", "#999", "C1"])
                ax.set_xticks([0, 1, 3, 4], ["ASR before", "ASR after", "acc before", "acc after"], fontsize=8)
            ax.set(ylim=(-0.02, 1.02), title=f"{row['defense']} on {row['attack']}")
            if row["curve"]:
                ax.legend(fontsize=8)
            for r in self.rows:
                ax2.scatter(r["asr"], r["clean_acc"], color=f"C{RUNNABLE.index(r['defense']) % 10}"
                            if r["defense"] in RUNNABLE else "k")
                ax2.annotate(f"{r['defense'][:4]} β/α={r['beta_over_alpha']:.0e} {r['iterations']}ep",
                             (r["asr"], r["clean_acc"]), fontsize=6)
            ax2.set(xlabel="ASR after", ylabel="clean accuracy after", title="every run so far", xlim=(-0.02, 1.02))
            ax2.grid(alpha=0.3)
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        self.figure = fig  # the last drawing, for code that inspects it

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
