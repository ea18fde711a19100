# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Ablations: every claim of the paper, measured
#
# The paper makes seven claims beyond its main table. Each section below measures one, plots it,
# and ends with a **verdict computed from the numbers** (the thresholds are written in the code,
# before the numbers they judge; "reproduced: false" is a result, not a bug):
#
# 1. **β/α** trades ASR for accuracy: tiny β/α erases the backdoor but forgets the clean task
#    (> 10 points), β/α = 100 keeps accuracy.
# 2. **Holding ratio**: BAERASER gets better with more clean data and is still strong with 1%.
# 3. **Trigger size**: BAERASER gets better as the trigger grows (3×3 → 5×5 → 7×7), the
#    baselines worse.
# 4. **Iterations**: lower ASR costs accuracy, yet ASR ≈ 0 is reached within < 10 points.
# 5. **Trigger position**: the repaired model stays clean wherever the trigger is stamped.
# 6. **Correct-label unlearning**: unlearning towards each image's correct label leaves accuracy
#    intact (the penalty protects correct memories).
# 7. **Recovered triggers** differ from the true one in few pixels.
# 8. **λ_H** (ours to test, promised by notebook 02): MSA's entropy term spreads the recovered
#    triggers, without costing the unlearning that uses them.
#
# **Protocol.** Victims and trigger pools come from the artifact cache (notebooks 01 and 02 made
# the reference ones; a sweep trains or recovers only what it changes). Every point of every sweep
# is scored on the same evaluation images: the part of the test split after the largest holding
# set of the full grid, which no D_h of any ratio overlaps (the holding sets are nested prefixes
# of one seeded permutation). The defenses see a model, D_h and the recovered pool only.

# %% tags=["parameters"]
# the reference victim (as notebook 01) and D_h (as notebooks 02 and 03)
dataset = "fashion_mnist"
attack = "badnets"  # badnets | trojannn | imc (the ablations resize and move a patch)
attack_options = {}  # as in notebook 01 (names the victim)
model = "resnet18"
width = 16
trigger_size = 3
trigger_position = "bottom_right"
poison_rate = None  # None: the attack's default, as in notebook 01
target_label = 0
epochs = 4
batch_size = 128
lr = 0.05
train_subset = None
holding_ratio = 0.05
seed = 0
# recovery (as notebook 02): the same default configuration at every trigger size (no guess)
trigger_form = "mask"  # mask (default) | patch: the authors' s×s patch, `patch_size` then the defender's hint
patch_size = 3  # trigger_form "patch" only
mask_steps = 200
eps = [0.5, 0.8, 0.9]
lambda_h = 0.1
tau = 0.8
steps_per_stage = 60
recovery_batch_size = 32
recovery_lr = 0.0002
mine_lr = 0.001
noise_dim = 64
hidden = None
placement = "grid"
grid_size = 5
prune = True
max_candidates = 3
# the defenses (as notebook 03)
alpha = 1.0
beta = 1.0
unlearn_lr = 0.01
unlearn_epochs = 3
unlearn_batch_size = 128
unlearn_loss = "ce"
bound = 4.605
unlearn_anchor = "outputs"  # as notebook 03 (issue #18's default); sections 1 and 6 test the paper's reading
unlearn_invariance = 1.0
unlearn_invariance_at = "penultimate"  # where: the head's input; "stages": also each stage's output map
unlearn_early_stop = False
unlearn_schedule = "cosine"
unlearn_path_rho = 0.5  # ρ: each step's loss taken at θ + ρ(θ − θ0), applied at θ (0: off, the paper)
unlearn_reset_fraction = 0.0  # q: each layer's q least-used weights (clean Fisher on D_h) zeroed first (0: off)
unlearn_channel_prune = 0.0  # r: each conv's r channels the recovered triggers move most zeroed first (0: off)
unlearn_head_shift = 0.0  # λ: head re-initialised, pushed off the suspect's by λ·⟨W, W_s⟩ (FST; 0: off)
unlearn_augment_invariance = 0.0  # γ_a: features also held under random patches, warps, blends (0: off)
finetune_lr = 0.01
finetune_epochs = 10
fineprune_acc_drop = 0.05
nad_beta = 5000.0
nad_epochs = 10
# the sweeps: a named grid (reduced: make reports on a CPU; full: the grid; smoke: tests)
grid = "reduced"
beta_ratios = None  # None: the grid's values; or a list, e.g. [0.0001, 0.01, 1.0, 100.0]
holding_ratios = None  # None: the grid's values, fractions of the training-set size
trigger_sizes = None  # None: the grid's values
lambda_h_values = None  # None: the grid's values of MSA's entropy weight λ_H
evaluation_reserve = 0.1  # evaluation skips the first 10% of the permutation (the full grid's largest D_h)
sweep_epochs = 3  # β/α and correct-label runs: every epoch runs, the last one is scored
trace_every = 4  # the iterations curve gets a point every this many SGD steps
curve_images = 1000  # evaluation images behind the iterations curve (plotting only)
positions = ["bottom_right", "bottom_left", "top_right", "top_left", "center", "random"]
position_images = 2000  # evaluation images behind the position sweep
panel_curve_images = 1000  # the widget panel scores on this many evaluation images
# section 9, erased for good: the attacker's re-tuning (as notebook 03's reactivation check)
reactivation_images = 1000
reactivation_poisoned = 20
reactivation_lr = 0.01
reactivation_epochs = 5
reactivation_batch_size = 32
device = "auto"
data_root = "../data"
download = True
artifacts_dir = "../artifacts"
reports_dir = "../reports"
report_name = "04_ablations"

# %%
import dataclasses
import time

import matplotlib.pyplot as plt
import torch

from baeraser_lib.data import load_experiment_data, seeded_subset
from baeraser_lib.lab import claims as C
from baeraser_lib.lab.ablations import (COMPARED, AblationBench, DefenseSuite, check_ablation_attack, check_positions,
                                        grid_values, position_figures, recovered_vs_true, run_defenses, scored,
                                        unlearn_or_keep)
from baeraser_lib.lab.claims import verdict_lines
from baeraser_lib.lab.plots import image_rows
from baeraser_lib.lab.reports import write_report
from baeraser_lib.lab.widgets import DefensePanel, bench_runner
from baeraser_lib.defenses.unlearning import PAPER_UNLEARNING
from baeraser_lib.metrics import der
from baeraser_lib.params import (attack_config, fineprune_config, finetune_config, nad_config, reactivation_config,
                                 recovery_config, train_config, unlearn_config)
from baeraser_lib.reactivation import reactivation
from baeraser_lib.train import pick_device
from baeraser_lib.victims import obtain_model

notebook_start = time.perf_counter()
sweeps = grid_values(grid, beta_ratios=beta_ratios, holding_ratios=holding_ratios, trigger_sizes=trigger_sizes,
                     lambda_h_values=lambda_h_values)
train_cfg, attack_cfg = train_config(globals()), attack_config(globals())  # the one mapping (`params`)
check_ablation_attack(attack_cfg, dataset)  # a patch attack with one target: the ablations move and resize it
for s in sweeps["trigger_sizes"]:  # every victim of the size sweep is checked before anything runs
    dataclasses.replace(attack_cfg, trigger_size=s).check_against(dataset)
recovery_cfg = recovery_config(globals())  # the parameters above, by name (as in notebooks 02 and 03)
suite = DefenseSuite(unlearn=unlearn_config(globals()), finetune=finetune_config(globals()),
                     fineprune=fineprune_config(globals()), nad=nad_config(globals()))
# the paper's claims about its penalty (sections 1 and 6) are tested on the paper's reading
sweep_unlearn = dataclasses.replace(suite.unlearn, **{**PAPER_UNLEARNING, "epochs": sweep_epochs}, select="last")
react_cfg = reactivation_config(globals())  # section 9's attacker, checked before anything runs
for r in sweeps["beta_ratios"]:  # every β of the sweep is a valid config before anything runs
    dataclasses.replace(sweep_unlearn, beta=r * alpha)
oracle = "" if recovery_cfg.form == "mask" else f" (the defender's patch hint: {patch_size}×{patch_size})"
dev = pick_device(device)
data = load_experiment_data(dataset, data_root, holding_ratio=holding_ratio, seed=seed, train_subset=train_subset,
                            download=download)
positions = check_positions(positions, max(sweeps["trigger_sizes"] + [trigger_size]), data.info.shape)
bench = AblationBench(data, train_cfg, attack_cfg, recovery_cfg, artifacts_dir,
                      sorted(set(sweeps["holding_ratios"]) | {holding_ratio}), evaluation_reserve, dev)
victim = bench.victim()
pool, pool_meta = bench.pool(victim, holding_ratio)
before = bench.before(victim)
print(f"victim {victim.path.name}; pool labels {pool.labels}; {len(bench.evaluation)} evaluation images, "
      f"D_h sizes {{{', '.join(f'{r:g}: {len(h)}' for r, h in bench.holdings.items())}}}")
print("no defense:", {k: round(v, 4) for k, v in before.items()})
pool_ok = len(pool) > 0  # with an empty pool BAERASER changes nothing, and no BAERASER claim can be reproduced
if not pool_ok:
    print("recovery kept no trigger on the reference D_h: BAERASER's runs below leave the model unchanged")
seconds = {}

# %% [markdown]
# `defended(size, ratio)` runs all four defenses once per (trigger size, holding ratio) and
# remembers the result, so the holding-ratio and trigger-size sweeps share their common point.

# %%
runs = {}


def defended(size, ratio):
    """Scores of every defense on the victim with an s×s trigger, with D_h of this ratio."""
    if (size, ratio) not in runs:
        start = time.perf_counter()
        v = bench.victim(trigger_size=size)
        p, meta = bench.pool(v, ratio)
        base = bench.before(v)
        repaired = run_defenses(v.model, bench.holdings[ratio], p, suite, COMPARED, dev, per_label=meta["per_label"])
        runs[size, ratio] = {"victim": v, "repaired": repaired, "pool_labels": p.labels,
                             "scores": {"none": {**base, "der": 0.5, "seconds": 0.0},
                                        **scored(bench, v, repaired, base)}}
        print(f"{size}×{size}, D_h {ratio:g}: " + "  ".join(
            f"{k} asr {r['asr']:.3f} acc {r['clean_acc']:.3f}" for k, r in runs[size, ratio]["scores"].items())
            + f"  ({time.perf_counter() - start:.0f} s)")
    return runs[size, ratio]["scores"]


def drop(after, base=None):
    """Accuracy drop in points against `base` (default: the reference victim)."""
    return C.drop(after, base or before)


# %% [markdown]
# ## 1 · β/α: erasing against remembering
# β weighs the dynamic penalty, α the unlearning term (α fixed at the notebook's value, β set to
# β/α · α). This section and section 6 test the paper's claims about its weight penalty, so they
# run the paper's reading (`PAPER_UNLEARNING`: weight anchor, no feature invariance), not the
# default since issue #18 (section 9). Each run takes `sweep_epochs` epochs and is scored at its **last** epoch: the model
# choice of notebook 03 would hide exactly the effect this sweep is about. The run at the
# notebook's own β/α also logs the iterations curve of section 4.
#
# What to expect from *our* loss: besides the penalty, it keeps a clean cross-entropy term on D_h
# and caps the unlearning term once p(y_p) < 1% (the spec's reading of Eq. 4). Both limit
# forgetting on their own, so a vanishing penalty need not cost the paper's > 10 points here; the
# penalty then mostly decides how much of the backdoor survives.

# %%
start = time.perf_counter()
ref_ratio = beta / alpha
curve_set = seeded_subset(bench.evaluation, min(curve_images, len(bench.evaluation)), seed)
beta_rows, iteration_history = [], None
for ratio in sorted(set(sweeps["beta_ratios"]) | {ref_ratio}):
    cfg = dataclasses.replace(sweep_unlearn, beta=ratio * alpha)
    logged = ratio == ref_ratio
    curve = (lambda m, e: {f"test_{k}": v for k, v in bench.score(m, victim, on=curve_set).items()}) if logged else None
    t0 = time.perf_counter()
    spent = {}
    repaired, history = unlearn_or_keep(victim.model, bench.holdings[holding_ratio], pool, cfg, dev, on_epoch=curve,
                                        trace_every=trace_every if logged else None, seconds=spent)
    secs = time.perf_counter() - t0 - spent.get("overhead", 0.0)
    if logged:
        iteration_history = history
    if ratio in sweeps["beta_ratios"]:
        r = bench.score(repaired, victim)
        beta_rows.append({"beta_over_alpha": ratio, **r, "acc_drop_points": drop(r),
                          "der": der(before["clean_acc"], r["clean_acc"], before["asr"], r["asr"]), "seconds": secs})
        print(f"β/α = {ratio:g}: ASR {r['asr']:.4f}, clean acc {r['clean_acc']:.4f} ({drop(r):+.2f} points lost)")
seconds["beta_alpha"] = time.perf_counter() - start

fig, ax = plt.subplots(figsize=(5.5, 3.3))
xs = [r["beta_over_alpha"] for r in beta_rows]
ax.plot(xs, [r["asr"] for r in beta_rows], marker="o", label="ASR")
ax.plot(xs, [r["clean_acc"] for r in beta_rows], marker="s", label="clean accuracy")
ax.axhline(before["clean_acc"], color="gray", lw=0.8, ls=":", label="clean accuracy before")
ax.set(xscale="log", xlabel="β/α", ylabel="fraction", ylim=(-0.02, 1.02),
       title=f"after {sweep_epochs} epochs of unlearning")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %%
verdicts = [C.tiny_beta_forgets(beta_rows, pool_ok), C.large_beta_keeps_accuracy(beta_rows, pool_ok),
            C.beta_trades_asr_for_accuracy(beta_rows, pool_ok)]
print(verdict_lines(verdicts))

# %% [markdown]
# ## 2 · Holding ratio: how much clean data the defender needs
# D_h of 1% and 5% of the training-set size (the full grid: 1%, 2%, 5%, 10%); recovery runs
# again on each D_h (a different D_h is a different pool), then all four defenses.

# %%
start = time.perf_counter()
holding_rows = {ratio: defended(trigger_size, ratio) for ratio in sweeps["holding_ratios"]}
seconds["holding_ratio"] = time.perf_counter() - start

fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for name in COMPARED:
    for ax, key in zip(axes, ("asr", "clean_acc", "der")):
        ax.plot([100 * r for r in holding_rows], [holding_rows[r][name][key] for r in holding_rows], marker="o",
                label=name)
for ax, key in zip(axes, ("ASR", "clean accuracy", "DER")):
    ax.set(xscale="log", xlabel="holding ratio (% of the training set)", title=key)
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
new = [C.small_holding_suffices(holding_rows, before, runs[trigger_size, min(holding_rows)]["pool_labels"] != []),
       C.more_holding_helps(holding_rows), C.baeraser_beats_baselines_at_every_ratio(holding_rows)]
verdicts += new
print(verdict_lines(new))

# %% [markdown]
# ## 3 · Trigger size
# One victim per trigger size (same attack, position and poison rate), its own pool recovered on
# the reference D_h with a patch of the trigger's size (see "Choices of ours"), then all four
# defenses. DER is measured against each victim's own figures before defense.

# %%
start = time.perf_counter()
size_rows = {s: defended(s, holding_ratio) for s in sweeps["trigger_sizes"]}
seconds["trigger_size"] = time.perf_counter() - start

fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
sizes = list(size_rows)
for name in ("none",) + COMPARED:
    for ax, key in zip(axes, ("asr", "clean_acc", "der")):
        if name == "none" and key == "der":
            continue
        ax.plot(sizes, [size_rows[s][name][key] for s in sizes], marker="o", ls=":" if name == "none" else "-",
                label=name)
for ax, key in zip(axes, ("ASR", "clean accuracy", "DER")):
    ax.set(xlabel="trigger size (pixels per side)", xticks=sizes, title=key)
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
new = [C.baeraser_improves_with_size(size_rows, oracle), C.baselines_worsen_with_size(size_rows)]
verdicts += new
print(verdict_lines(new))

# %% [markdown]
# ## 4 · Iterations: the ASR / accuracy trade-off as unlearning proceeds
# The run of section 1 at the notebook's β/α, scored every `trace_every` SGD steps on a fixed
# part of the evaluation set (plotting only: the run never sees these numbers).

# %%
pts = [h for h in iteration_history if "test_asr" in h]
n_holding = len(bench.holdings[holding_ratio])
n_defense_train = n_holding - round(sweep_unlearn.val_fraction * n_holding)
steps_per_epoch = -(-n_defense_train // sweep_unlearn.batch_size)  # SGD steps per epoch over D_h's training part
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
ax.plot([h["epoch"] for h in pts], [h["test_asr"] for h in pts], marker="o", label="ASR")
ax.plot([h["epoch"] for h in pts], [h["test_clean_acc"] for h in pts], marker="s", label="clean accuracy")
ax.set(xlabel="epochs of unlearning", ylabel="fraction", ylim=(-0.02, 1.02), title=f"β/α = {ref_ratio:g}")
ax.legend(fontsize=8)
ax2.plot([h["test_asr"] for h in pts], [100 * (pts[0]["test_clean_acc"] - h["test_clean_acc"]) for h in pts],
         marker="o")
for h in pts[:: max(1, len(pts) // 8)]:
    ax2.annotate(f"{h['epoch']:.2f}", (h["test_asr"], 100 * (pts[0]["test_clean_acc"] - h["test_clean_acc"])),
                 fontsize=7)
ax2.set(xlabel="ASR", ylabel="accuracy lost (points)", title="trade-off (labels: epochs)")
for a in (ax, ax2):
    a.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %%
new = [C.erased_without_forgetting(pts, pool_ok), C.few_iterations_suffice(pts, pool_ok),
       C.lower_asr_costs_accuracy(pts, pool_ok)]
verdicts += new
print(verdict_lines(new))

# %% [markdown]
# ## 5 · Trigger position
# The reference victim learned its trigger at one place (`trigger_position`). The same pattern is
# now stamped elsewhere, before and after each defense (from section 2's reference run). The
# claim judged: after BAERASER, no position brings the backdoor back. Whether the backdoor fired
# at the other positions *before* the defense is printed beside it: a patch learned at a fixed
# place may not fire elsewhere at all, and then this section shows only that unlearning opens no
# new position (a victim attacked at random positions, `-p trigger_position random`, is the
# harder test).

# %%
start = time.perf_counter()
pos_set = seeded_subset(bench.evaluation, min(position_images, len(bench.evaluation)), seed)
defended(trigger_size, holding_ratio)
ref = runs[trigger_size, holding_ratio]
position_rows = {"none": position_figures(victim.model, pos_set, victim.trigger, victim.rule, positions, dev)}
for name in COMPARED:
    position_rows[name] = position_figures(ref["repaired"][name].model, pos_set, victim.trigger,
                                           victim.rule, positions, dev)
seconds["position"] = time.perf_counter() - start
names = list(position_rows)
pos_names = list(position_rows["none"])
fig, ax = plt.subplots(figsize=(9, 3.2))
w = 0.8 / len(names)
for i, name in enumerate(names):
    ax.bar([j + i * w for j in range(len(pos_names))], [position_rows[name][p] for p in pos_names], w, label=name)
ax.set_xticks([j + w * (len(names) - 1) / 2 for j in range(len(pos_names))], pos_names)
ax.set(ylabel="ASR", ylim=(0, 1.05), title=f"trigger learned at {trigger_position}, stamped elsewhere")
ax.legend(fontsize=8)
plt.show()

# %%
new = [C.no_position_brings_it_back(position_rows, pool_ok)]
verdicts += new
print(verdict_lines(new))

# %% [markdown]
# ## 6 · Correct-label unlearning
# The same unlearning, but each triggered image is unlearned towards **its own correct label**
# instead of the pool label: the model is told to forget correct memories. The paper says
# accuracy barely moves, because the penalty restrains it. Run at the notebook's β/α and at the
# largest β/α of the sweep (a stiffer penalty, the clean term unchanged: the difference is the
# penalty's), and, as a control, without the clean term and the penalty (plain ascent on correct
# labels). Like section 1, every epoch runs and the last is scored: notebook 03's model choice
# would simply return the untouched model here (no epoch improves the defender's DER), which says
# nothing about the penalty. Note the bound: a triggered image the backdoor already sends to the
# target has p(correct) < 1%, so its capped term gives no gradient; the images the recovered
# trigger does not flip drive the run, at least at first.

# %%
start = time.perf_counter()
correct_rows = {}
stiff = max(sweeps["beta_ratios"] + [ref_ratio * 100])  # strictly stiffer than the notebook's β/α
for name, cfg in ((f"baeraser β/α={ref_ratio:g}", dataclasses.replace(sweep_unlearn, target="correct")),
                  (f"baeraser β/α={stiff:g}", dataclasses.replace(sweep_unlearn, target="correct", beta=stiff * alpha)),
                  ("plain ascent", dataclasses.replace(sweep_unlearn, target="correct", vanilla=True, beta=0.0))):
    repaired, _ = unlearn_or_keep(victim.model, bench.holdings[holding_ratio], pool, cfg, dev)
    r = bench.score(repaired, victim)
    correct_rows[name] = {**r, "acc_drop_points": drop(r)}
    print(f"{name:>18}, correct labels: clean acc {r['clean_acc']:.4f} ({drop(r):+.2f} points lost), "
          f"ASR {r['asr']:.4f}")
seconds["correct_label"] = time.perf_counter() - start

# %%
reference, stiff_run = f"baeraser β/α={ref_ratio:g}", f"baeraser β/α={stiff:g}"
new = [C.correct_labels_keep_accuracy(correct_rows, reference, ref_ratio, pool_ok),
       C.penalty_protects_correct_memories(correct_rows, reference, stiff_run, ref_ratio, stiff, pool_ok)]
verdicts += new
print(verdict_lines(new))

# %% [markdown]
# ## 7 · Recovered triggers beside the true ones
# For each trigger size: the true pattern, and patches sampled from the recovered generator of
# the target label (the evaluation side looks the target up; recovery never knew it).

# %%
recovered_rows, panels, titles = recovered_vs_true(bench, {s: runs[s, holding_ratio]["victim"] for s in sizes},
                                                  holding_ratio, seed)
if panels:
    image_rows(panels, titles, scale=1.3)
    plt.show()
for s, r in recovered_rows.items():
    if not r["found"]:
        print(f"{s}×{s}: the target label was not recovered")
    elif "mask_share_on_true_patch" in r:
        print(f"{s}×{s}: {100 * r['mask_share_on_true_patch']:.0f}% of the recovered mask ({r['mask_size']:.1f} "
              f"pixels) lies on the true {s}×{s} patch")
    elif r.get("size_differs"):
        print(f"{s}×{s}: the hinted patch ({patch_size}) differs from the trigger; no pixel comparison")
    else:
        print(f"{s}×{s}: recovered at offset {r['offset']}, {100 * r['pixels_within_0.25']:.0f}% of pixels "
              f"within 0.25 of the true value (mean |Δ| {r['mean_abs_diff']:.3f})")


# %%
new = [C.recovered_matches_true(recovered_rows, oracle)]
verdicts += new
print(verdict_lines(new))

# %% [markdown]
# ## 8 · λ_H: how far the entropy term spreads the recovered triggers
# MSA maximises the entropy of its generator (MINE estimate, weight λ_H) so the pool covers the
# region of patches the backdoor answers to rather than one point. Recovery runs again on the
# reference victim and D_h for each λ_H (0 switches the entropy term off), then BAERASER as in
# notebook 03 (defender-side model choice). Spread: the mean per-pixel standard deviation of 64
# patches from the generator of the target label (the evaluation side looks the target up).

# %%
start = time.perf_counter()
lambda_rows = {}
for lam in sweeps["lambda_h_values"]:
    p, meta = bench.pool(victim, holding_ratio, dataclasses.replace(recovery_cfg, lambda_h=lam))
    row = {"labels_kept": p.labels, "target_found": victim.target_label in p.labels,
           "seconds_recovery": meta["seconds_recovery"]}
    if row["target_found"]:
        i = p.labels.index(victim.target_label)
        row["spread"] = p.sample(i, 64, torch.Generator().manual_seed(seed)).std(0).mean().item()
        row["recovered_asr"] = next(r["recovered_asr"] for r in meta["per_label"] if r["label"] == victim.target_label)
    repaired = run_defenses(victim.model, bench.holdings[holding_ratio], p, suite, ["baeraser"], dev)["baeraser"]
    row.update(scored(bench, victim, {"baeraser": repaired}, before)["baeraser"])
    lambda_rows[lam] = row
    print(f"λ_H = {lam:g}: pool {p.labels}, spread {row.get('spread', float('nan')):.4f}; BAERASER ASR {row['asr']:.4f}, "
          f"clean acc {row['clean_acc']:.4f}, DER {row['der']:.4f}")
seconds["lambda_h"] = time.perf_counter() - start

# %%
new = [C.entropy_spreads_triggers(lambda_rows), C.spread_costs_no_unlearning(lambda_rows, pool_ok)]
verdicts += new
print(verdict_lines(new))

# %% [markdown]
# ## 9 · Erased for good? The attacker re-tunes (issue #18; our claim, not the paper's)
# A low ASR right after the defense can be superficial: Min et al. (NeurIPS 2024) showed purified
# models re-learning their backdoor from a handful of poisoned images far faster than a model
# that never had one. The attacker of notebook 03's reactivation check (`reactivation_images`
# images, `reactivation_poisoned` stamped with the true trigger, SGD) re-tunes the model each
# unlearning setting returns on the reference victim, and the never-backdoored model of the same
# recipe. The settings take the default apart, one piece at a time:
# * **the default**: the clean outputs held (KL to the suspect on D_h) + feature invariance
#   (stamped images' penultimate features pulled onto their clean ones), all epochs (3, the lr
#   decayed along a cosine, each step's loss taken a little further along the path from θ0: the
#   path step, ρ = 0.5), best validation DER;
# * **the paper's reading**: the Fisher-weighted penalty towards θ0 and early stopping;
# * **outputs anchor only**: the default without feature invariance;
# * **invariance + weight anchor**: the default with the paper's penalty instead of the outputs
#   anchor.
# Evaluation only: the true trigger and training images appear here, never in a defense.

# %%
start = time.perf_counter()
settings = {"the default": suite.unlearn,
            "the paper's reading": dataclasses.replace(suite.unlearn, **PAPER_UNLEARNING),
            "outputs anchor only": dataclasses.replace(suite.unlearn, invariance=0.0),
            "invariance + weight anchor": dataclasses.replace(suite.unlearn, anchor="weights")}
clean_reference = obtain_model(train_cfg, None, data, artifacts_dir, device=dev, progress=False).model
reference_after = reactivation(clean_reference, data.train, bench.evaluation, victim.trigger, victim.rule,
                               react_cfg, device=dev)["asr_after"]
retuned_rows = {}
for name, cfg in settings.items():
    repaired, _ = unlearn_or_keep(victim.model, bench.holdings[holding_ratio], pool, cfg, dev)
    r = bench.score(repaired, victim)
    after = reactivation(repaired, data.train, bench.evaluation, victim.trigger, victim.rule, react_cfg, device=dev,
                         before=r)
    retuned_rows[name] = {**r, "acc_drop_points": drop(r), "asr_after": after["asr_after"],
                          "clean_acc_after": after["clean_acc_after"]}
    print(f"{name:>27}: ASR {r['asr']:.4f}, clean acc {r['clean_acc']:.4f} ({drop(r):+.2f} points lost); "
          f"re-tuned ASR {after['asr_after']:.4f}")
print(f"{'clean reference':>27}: re-tuned ASR {reference_after:.4f} (the bar: "
      f"{reference_after + C.REACTIVATION_MARGIN:.4f})")
seconds["reactivation"] = time.perf_counter() - start

fig, ax = plt.subplots(figsize=(6.5, 3))
names_ = list(retuned_rows)
ax.bar([i - 0.2 for i in range(len(names_))], [retuned_rows[k]["asr"] for k in names_], 0.4, label="after the defense")
ax.bar([i + 0.2 for i in range(len(names_))], [retuned_rows[k]["asr_after"] for k in names_], 0.4,
       label="after the attacker's re-tuning")
ax.axhline(reference_after + C.REACTIVATION_MARGIN, color="gray", ls="--", lw=0.8,
           label="clean reference re-tuned + 0.10")
ax.set_xticks(range(len(names_)), names_, fontsize=8)
ax.set(ylabel="ASR (true trigger)", ylim=(0, 1.02))
ax.legend(fontsize=7)
fig.tight_layout()
plt.show()

# %%
new = [C.default_stays_erased(retuned_rows, "the default", reference_after, pool_ok),
       C.weight_anchor_relearns(retuned_rows, "the paper's reading", reference_after, pool_ok)]
verdicts += new
print(verdict_lines(new))

# %% [markdown]
# ## Play with it: the widget panel
# Pick an attack and a defense, set β/α, the holding ratio and the number of epochs, press
# **Run**: the defense runs again from the cached victim and pool (recovering a pool first if that
# D_h has none yet) and the table and plots update. In the HTML report the panel is only a
# note; open this notebook in JupyterLab (`make lab`) to use it. It needs only the set-up cells
# at the top (run them, then this one: no sweep has to run first), or call
# `DefensePanel(bench_runner(bench, suite), attacks=[...])` from your own notebook.

# %%
panel = DefensePanel(bench_runner(bench, suite, curve_images=panel_curve_images), attacks=[attack],
                     holding_ratios=list(bench.holdings), beta_over_alpha=beta / alpha, holding_ratio=holding_ratio,
                     iterations=sweep_epochs)
panel

# %% [markdown]
# ## Verdicts and key figures
# Written to `reports/04_ablations.json`: every sweep's raw numbers and every verdict.

# %%
print(verdict_lines(verdicts))


def strip(scores):
    return {k: {m: round(x, 6) if isinstance(x, float) else x for m, x in v.items()} for k, v in scores.items()}


figures = {
    "dataset": dataset,
    "attack": attack,
    "grid": grid,
    "sweeps": sweeps,
    "evaluation_images": len(bench.evaluation),
    "holding_sizes": {f"{r:g}": len(h) for r, h in bench.holdings.items()},
    "victim": victim.path.name,
    "pool_labels": pool.labels,
    "before": before,
    "beta_alpha": beta_rows,
    "holding_ratio": {f"{r:g}": strip(v) for r, v in holding_rows.items()},
    "trigger_size": {str(s): strip(v) for s, v in size_rows.items()},
    "iterations": [{"epoch": h["epoch"], "step": round(h["epoch"] * steps_per_epoch), "asr": h["test_asr"],
                    "clean_acc": h["test_clean_acc"]} for h in pts],
    "positions": position_rows,
    "correct_label": correct_rows,
    "recovered_triggers": {str(s): r for s, r in recovered_rows.items()},
    "lambda_h": {f"{k:g}": v for k, v in lambda_rows.items()},
    "reactivation": {"config": dataclasses.asdict(react_cfg), "reference_asr_after": reference_after,
                     "settings": retuned_rows},
    "verdicts": verdicts,
    "reproduced": sum(v["reproduced"] for v in verdicts),
    "claims": len(verdicts),
    "seconds": seconds,
    "notebook_seconds": time.perf_counter() - notebook_start,
}
write_report(reports_dir, report_name, figures)
print(f"{figures['reproduced']} of {figures['claims']} claims reproduced; notebook ran "
      f"{figures['notebook_seconds']:.0f} s")

# %% [markdown]
# ## Choices of ours (interpretation of the paper)
# * **β/α** is swept by β at fixed α. Our loss also holds a clean cross-entropy term on D_h with
#   weight 1, which the paper's description leaves open; it keeps accuracy on its own, so a tiny
#   β does not have to mean catastrophic forgetting here.
# * **Sweep runs are scored at their last epoch** (β/α, correct labels, iterations), not at the
#   epoch notebook 03's defender-side model choice would return: these sections measure the
#   settings, not the choice. Holding-ratio, trigger-size and position sections run every defense
#   exactly as notebook 03 does.
# * **No oracle in the trigger-size sweep.** Every victim, whatever its trigger size, is defended
#   with the same default configuration as notebooks 02 and 03 (mask form, suspects confirmed by
#   unlearning). Until the trigger-agnostic change the recovery patch was set to the true trigger
#   size here, an oracle; `trigger_form = "patch"` with `patch_size` gives every victim's defender
#   that one hinted size instead.
# * **Trigger position**: the victim's trigger was fixed at one place; the claim is judged at every
#   position tried, and the report says where the backdoor fired before defense.
# * **Correct-label unlearning** keeps everything of BAERASER (pool triggers, bound, clean term,
#   penalty) and replaces only the pool label by each image's own label.
# * **Empty pool**: if recovery keeps no trigger on the reference D_h, BAERASER leaves the model
#   unchanged, and every BAERASER claim is judged not reproduced (there was nothing to test).
# * **Thresholds of the verdicts** (2% ASR, 10 / 2 / 1 points, 95% reduction, 0.25 per pixel) are
#   ours, fixed in the code before the runs; the paper gives figures, not tests.
