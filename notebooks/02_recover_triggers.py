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
# # 02 · Recover the trigger without knowing it
#
# From here on we are the **defender**. We hold a model that may carry a backdoor, a small clean
# holding set D_h, and the number of classes. We do not know the trigger, where it sits, the
# target label, or which training images were poisoned, and we never see the training set.
#
# **Why a distribution, not one pattern.** If a trigger Δ exists, a *whole batch* of clean images
# stamped with Δ goes to the target y_t. That is unlike an adversarial example, whose noise serves
# one input. So BAERASER's Max-entropy Staircase Approximator (MSA) looks, for every candidate
# label y_p, for a *distribution* of patches G(δ), δ ~ U[0,1)^64, that sends clean images to y_p.
#
# **Why entropy.** The trigger the model learned is not one exact pixel pattern but a region of
# patterns the network responds to. Maximising the entropy of G's output (estimated with MINE, a
# neural lower bound on the mutual information I(δ; G(δ)), which for a deterministic G is its
# output entropy) makes G cover that region instead of collapsing to a single point. Notebook 03
# unlearns the whole region.
#
# **Why a staircase.** Stage i minimises mean max(0, ε_i − p_{y_p}(x ⊕ G(δ))) − λ_H·Î with
# ε_1 < ε_2 < … (0.5, 0.8, 0.9). The hinge stops pushing once a sample reaches ε_i, so the
# capacity goes to entropy rather than to overshooting; each stage starts from the previous
# generator, climbing towards the trigger distribution. A label joins the *trigger pool* only if
# its generator's ASR on held-out D_h images reaches τ.
#
# **No guess of the trigger: our extension of the paper.** The authors' generator emits an s×s
# patch, s being the defender's guess of the trigger size, stamped at a random place. A defender
# knows neither size nor shape, place or kind, and measured here a guess of 3×3 found nothing on
# 5×5 or 7×7 patches, blends or warps. So by default (`trigger_form = "mask"`) a trigger is a
# full-image **mask** m ∈ [0,1]^{H×W} with a **pattern** p, stamped as (1 − m)⊙x + m⊙p: a patch of
# any size at any place, a sparse set of pixels and a faint blend are all special cases.
#
# 1. **Mask search** (Neural Cleanse's insight, all labels in one vectorised pass): for every label,
#    the smallest mask that still sends 90% of a batch of D_h images there. λ, the weight of the
#    mask size, rises while the batch is reached and falls when it is not.
# 2. **Detection** (Neural Cleanse's rule): the anomaly index of each label's mask size, on a log
#    scale, (median − log size) / (1.4826 · MAD). Labels at 2.0 or more are **flagged** (at most
#    `max_candidates`, the most anomalous). None flagged: the model is judged clean, the pool stays
#    empty and notebook 03 leaves the model alone. A caveat measured below: some natural labels
#    need few pixels too (on Fashion-MNIST, "bag" needs about ten on every model, clean ones too).
# 3. **Staircase** (MSA) for the flagged labels only: the generator emits the pattern inside the
#    label's mask, which starts from the searched one and may grow as far as the hinge needs; the
#    entropy term sees what reaches the image, m⊙G(δ). A flagged label joins the pool if its
#    generator's ASR on held-out D_h images reaches τ.
#
# `trigger_form = "patch"` restores the authors' patch (with our placement search over a grid of
# positions, as before this change); `patch_size` is then the defender's hint.

# %% tags=["parameters"]
# the victim: notebook 01's artifact with these parameters, or an external checkpoint
dataset = "fashion_mnist"
attack = "badnets"  # badnets | trojannn | imc | blended | wanet | sig
attack_options = {}  # as in notebook 01 (names the victim)
model = "resnet18"
width = 16
trigger_size = 3
trigger_position = "bottom_right"
poison_rate = None  # None: the attack's default, as in notebook 01
target_label = 0  # None for badnets' mode all_to_all
epochs = 4
batch_size = 128
lr = 0.05
train_subset = None
model_path = None  # or your own checkpoint (.safetensors / weights-only .pt): `model` is then its architecture
model_def = None  # or "FILE.py:FACTORY" for your own architecture (FACTORY(num_classes) -> nn.Module)
# the defender's data
holding_ratio = 0.05
seed = 0
# recovery: one default configuration for every model (nothing below guesses the trigger)
trigger_form = "mask"  # mask: full-image mask + pattern (default); patch: an s×s patch (the authors')
patch_size = 3  # trigger_form "patch" only: the defender's hint of the trigger size
mask_steps = 200
eps = [0.5, 0.8, 0.9]
lambda_h = 0.1
tau = 0.8
steps_per_stage = 60
recovery_batch_size = 32
recovery_lr = 0.0002
mine_lr = 0.001
noise_dim = 64
hidden = None  # generator width; None: 256 for masks, 32·C·s² (128..2048) for patches
placement = "grid"  # trigger_form "patch" only: grid | random (the authors' choice)
grid_size = 5
prune = True
max_candidates = 3
device = "auto"
data_root = "../data"
download = True
artifacts_dir = "../artifacts"
reports_dir = "../reports"
report_name = "02_recover_triggers"

# %%
import time

import matplotlib.pyplot as plt
import torch

from baeraser_lib.artifacts import file_digest
from baeraser_lib import load_model
from baeraser_lib.data import as_tensors, dataset_info, load_experiment_data
from baeraser_lib.defenses.pool import obtain_pool
from baeraser_lib.params import attack_config, recovery_config, train_config
from baeraser_lib.lab.plots import image_rows, label_scores, mask_scores, stage_curves
from baeraser_lib.lab.reports import write_report
from baeraser_lib.train import pick_device, predict
from baeraser_lib.triggers import Trigger, check_fits, fixed_offset
from baeraser_lib.victims import find_model

notebook_start = time.perf_counter()
recovery_cfg = recovery_config(globals())  # the parameters above, by name
if recovery_cfg.form == "patch":
    check_fits(patch_size, "top_left", dataset_info(dataset).shape)  # the hinted patch must fit the images
dev = pick_device(device)
data = load_experiment_data(dataset, data_root, holding_ratio=holding_ratio, seed=seed,
                            train_subset=train_subset, download=download)

if model_path is None:
    victim = find_model(artifacts_dir, train_config(globals()), attack_config(globals()))
    suspect, victim_id = victim.model, victim.path.name
    truth = {"trigger": victim.trigger, "target": victim.target_label, "rule": victim.rule}  # EVALUATION cells only
    print(f"victim: notebook 01's artifact {victim.path}")
else:
    suspect = load_model(model_path, None if model_def else model, data.info.num_classes, model_def)
    victim_id = file_digest(model_path)
    truth = None  # an external model: nobody here knows its trigger
    print(f"victim: external checkpoint {model_path} (sha256 {victim_id})")
print(recovery_cfg)

# %% [markdown]
# ## What the defender gets
# Exactly three things go into recovery: the model, D_h and the number of classes. The recovery
# API has no parameter for a trigger or a target label.

# %%
num_classes = data.info.num_classes
holding_key = {"dataset": dataset, "holding_ratio": holding_ratio, "seed": seed, "n": len(data.holding)}
print(f"model: {type(suspect).__name__}; D_h: {len(data.holding)} clean images; classes: {num_classes}")
pool, meta, pool_path, cached = obtain_pool(suspect, victim_id, data.holding, num_classes, recovery_cfg,
                                            artifacts_dir, holding_key, device=dev)
per_label = meta["per_label"]
print(f"pool: {'loaded from cache' if cached else 'recovered'} ({pool_path}); "
      f"recovery took {meta['seconds_recovery']:.1f} s")
print(f"verdict: {'backdoored' if meta.get('backdoored') else 'clean'}; flagged {meta.get('flagged')}; "
      f"pooled (generator ASR ≥ τ = {tau}): {pool.labels}"
      + (f" at placements {pool.offsets}" if recovery_cfg.form == "patch" else ""))

# %% [markdown]
# ## Every candidate label
# Mask form: each label's smallest working mask (pixels, averaged over the end of its search), the
# anomaly index of those sizes, and for the suspects the staircase generator's ASR on held-out D_h
# images (a quarter of D_h that recovery never trained on). Patch form: the screening ASR at the
# best place instead of a mask size.

# %%
if recovery_cfg.form == "mask":
    print(f"{'label':>5} {'mask size':>9} {'mask ASR':>8} {'anomaly':>8} {'staircase ASR':>13}  pooled")
    for r in per_label:
        rec = f"{r['recovered_asr']:.3f}" if r["recovered_asr"] is not None else "-"
        print(f"{r['label']:>5} {r['mask_size']:>9.1f} {r['mask_asr']:>8.3f} {r['anomaly_index']:>8.1f} {rec:>13}"
              f"  {'yes' if r['kept'] else ''}")
    fig = mask_scores(per_label)
else:
    print(f"{'label':>5} {'screen ASR':>10} {'staircase ASR':>13} {'placement':>10} {'anomaly':>8}  kept")
    for r in per_label:
        rec = f"{r['recovered_asr']:.3f}" if r["recovered_asr"] is not None else "pruned"
        print(f"{r['label']:>5} {r['screen_asr']:>10.3f} {rec:>13} "
              f"{str(tuple(r['offset']) if r['offset'] else 'random'):>10} {r['anomaly_index']:>8.1f}  "
              f"{'yes' if r['kept'] else ''}")
    fig = label_scores(per_label, tau)
plt.show()

# %% [markdown]
# ## The staircase, stage by stage
# The hinge should stay near 0 (each stage's ε is reached), while the entropy estimate shows how
# widely the generator spreads its patches. Within this short CPU budget and the spec's λ_H = 0.1
# and lr = 2e-4 the spread stays modest; larger λ_H (e.g. 1.0) widens it while the ASR holds
# (notebook 04 sweeps it).

# %%
if meta["stage_logs"]:
    fig = stage_curves(meta["stage_logs"])
    plt.show()

# %% [markdown]
# ## Recovered triggers
# For every pooled suspect: its mask (mask form), samples of its generator, and held-out images
# stamped with them.

# %%
if len(pool):
    gen = torch.Generator().manual_seed(seed)
    x_show = as_tensors(data.holding)[0][:7]
    rows, titles = {}, {}
    for i, label in enumerate(pool.labels):
        samples = pool.sample(i, 7, gen)
        if pool.masks is not None:  # show what reaches the image: the mask, then m⊙G(δ)
            samples = torch.cat([pool.masks[i][None].expand(1, *samples.shape[1:]), pool.masks[i] * samples])
        rows[f"label {label}: trigger"] = samples
        rows[f"label {label}: stamped"] = pool.stamp(i, x_show, gen)
        titles[f"label {label}: trigger"] = (["mask"] if pool.masks is not None else []) + \
            [f"sample {j}" for j in range(7)]
    fig = image_rows(rows, titles, scale=1.2)
    plt.show()

# %% [markdown]
# ## Evaluation only: compare with the attacker's secret
# **These cells read the true trigger and target label**, which recovery never saw, to score it:
# was the true target a suspect and pooled, where does its recovered mask (or patch) sit against
# the true trigger, and do the recovered triggers fire on the evaluation split too? (Places are
# compared only when the true trigger is a patch at a fixed place; an all-to-all attack has no
# single target to find.)

# %%
evaluation = {}
if truth is not None and truth["rule"].mode == "all_to_all":
    evaluation = {"all_to_all": True, "labels_pooled": len(pool.labels)}
    print(f"all-to-all attack: every label is a target; recovery pooled {pool.labels}")
elif truth is not None:
    true_t, true_trig = truth["target"], truth["trigger"]
    row = next(r for r in per_label if r["label"] == true_t)
    found = true_t in pool.labels
    c, h, w = data.info.shape
    is_patch = isinstance(true_trig, Trigger)
    true_off = fixed_offset(true_trig.position, true_trig.size, h, w) \
        if is_patch and true_trig.position != "random" else None
    evaluation = {
        "target_label_found": found,
        "target_is_suspect": bool(row.get("candidate", row["staircase"])),
        "recovered_asr": row["recovered_asr"] if row["recovered_asr"] is not None else row["screen_asr"],
        "other_labels_kept": len([k for k in pool.labels if k != true_t]),
        "true_placement": list(true_off) if true_off else None,
    }
    if recovery_cfg.form == "mask":
        sizes = sorted(r["mask_size"] for r in per_label)
        evaluation["target_mask_size"] = row["mask_size"]
        evaluation["target_mask_rank"] = sizes.index(row["mask_size"]) + 1  # 1: the smallest mask
        evaluation["target_anomaly_index"] = row["anomaly_index"]
    else:
        evaluation["placement_found"] = list(row["offset"]) if row["offset"] else None
    if found:
        i = pool.labels.index(true_t)
        samples = pool.sample(i, 256, torch.Generator().manual_seed(seed))
        if pool.masks is not None and true_off is not None:  # how much of the mask lies on the true patch
            box = torch.zeros(h, w, dtype=torch.bool)
            box[true_off[0]:true_off[0] + true_trig.size, true_off[1]:true_off[1] + true_trig.size] = True
            evaluation["mask_share_on_true_patch"] = float(pool.masks[i][0][box].sum() / pool.masks[i].sum())
        if pool.masks is None and is_patch and samples.shape[-1] == true_trig.size:
            mean_patch, where = samples.mean(0), true_trig.set_pixels()  # a sparse trigger sets only some
            evaluation["patch_l1_to_true"] = float((samples - true_trig.pattern).abs()[:, where].mean())
            evaluation["mean_patch_cosine_to_true"] = float(torch.nn.functional.cosine_similarity(
                mean_patch[where], true_trig.pattern[where], dim=0))
        evaluation["pattern_spread_std"] = float(samples.std(0).mean())
        x_eval, y_eval = as_tensors(data.evaluation)
        x_eval = x_eval[truth["rule"].counted(y_eval)]
        pred = predict(suspect, pool.stamp(i, x_eval, torch.Generator().manual_seed(seed)), device=dev)
        evaluation["recovered_asr_on_evaluation_split"] = float((pred == true_t).float().mean())
        truth_row = true_trig.apply(x_eval[:3])
        shown = pool.stamp(i, x_eval[:3], torch.Generator().manual_seed(seed))
        extra = {"recovered mask": pool.masks[i][None]} if pool.masks is not None else {}
        fig = image_rows({"true trigger": truth_row, "recovered": shown, **extra},
                         {"true trigger": [f"true ({getattr(true_trig, 'kind', 'patch')})"] * 3,
                          "recovered": [f"label {true_t}"] * 3})
        plt.show()
    for k, v in evaluation.items():
        print(f"{k:>36}: {v}")
else:
    print("external model: no ground truth to compare with")

# %% [markdown]
# ## Key figures
# Written to `reports/02_recover_triggers.json`.

# %%
figures = {
    "dataset": dataset,
    "attack": attack,
    "num_classes": num_classes,
    "labels_kept": list(pool.labels),
    "suspects": meta.get("candidates"),
    "trigger_form": recovery_cfg.form,
    "mask_sizes": [r.get("mask_size") for r in per_label],
    "anomaly_index": [r["anomaly_index"] for r in per_label],
    "placements_kept": [list(o) if o is not None else None for o in pool.offsets],
    "seconds_recovery": meta["seconds_recovery"],
    "labels_through_staircase": [r["label"] for r in per_label if r["recovered_asr"] is not None],
    "pool_artifact": pool_path.name,
    "victim_id": victim_id,
    "loaded_from_cache": cached,
    "tau": tau,
    "patch_size": patch_size if recovery_cfg.form == "patch" else None,
    "placement": placement if recovery_cfg.form == "patch" else None,
    **evaluation,
    "notebook_seconds": time.perf_counter() - notebook_start,
}
write_report(reports_dir, report_name, figures)
if truth is not None and "target_label_found" in figures:
    checks = {
        "true target in the pool": figures["target_label_found"],
        "recovered_asr ≥ 0.90": figures["recovered_asr"] >= 0.90,
        "at most two other labels pooled": figures["other_labels_kept"] <= 2,
        "recovery ≤ 5 minutes": figures["seconds_recovery"] <= 300,
    }
    for claim, ok in checks.items():
        print(f"{'met   ' if ok else 'MISSED'}  {claim}")

# %% [markdown]
# ## Choices of ours (interpretation of the paper)
# * **The trigger form.** By default a full-image mask and pattern (see the top of this notebook),
#   our extension: the paper's generator emits an s×s patch of a guessed size. `trigger_form =
#   "patch"` restores it, with our placement search (a grid of `grid_size`² positions, successive
#   halving per label) or `placement = "random"` (the authors' random stamping).
# * **Only flagged labels climb the staircase** (at most `max_candidates`): the others, the
#   hopeless ones, are pruned after the mask search. The staircase starts from each
#   flagged label's mask (free to grow, no size penalty) and spreads the pattern inside it
#   (entropy of m⊙G(δ)).
# * **Log sizes in the anomaly index**: sizes compare by ratios. Chosen after our first screening
#   runs, in which raw sizes gave the default victim's target an index of 1.7, below the cut.
# * **A second test we tried and turned off** (`confirm` in notebook 03): does a flagged label's
#   smallest mask grow after unlearning? It did for backdoors, but as much for natural shortcuts
#   (see `baeraser_lib/defenses/detection.py` for the figures), so it decides nothing here.
# * **Four more tests measured, none adopted** (`benchmarks/natural_shortcuts.py`, JSON in
#   `reports/benchmarks/natural_shortcuts_*.json`; clean seeds 0–1 and two BadNets victims). Could
#   the defender tell Fashion-MNIST's natural shortcuts ("bag" 8, "shirt" 6) from a target?
#   (1) *Own-class harm*: unlearning the target's trigger alone cost class 0 as much validation
#   accuracy (18 points) as unlearning "bag" cost class 8 (13–19); "shirt" lost 53.
#   (2) *Staircase growth*: the staircase grew the targets' masks 2.6–3.0× and the natural ones'
#   2.6–3.7×, overlapping. (3) *Transfer to a small CNN trained on D_h alone*: "bag" triggers
#   sent 2% of its images to "bag" (its base rate 1%), the targets' triggers 2–5% to the target;
#   only "shirt" transferred (14–18%). (4) *Mask sizes relative to a reference trained on D_h
#   alone* (`benchmarks/reference_masks.py`; every families victim and clean seeds 0–2, from the
#   sizes the trigger-agnostic benchmark stored): "bag" did not cancel, since a model trained on
#   3,000 images needs a relatively far larger mask for it than one trained on the full set. With a
#   small CNN as the reference 10 of 12 targets were flagged, with ResNet-18 8 of 12, against 11
#   for the plain index, and still only 1 of 3 clean models was judged clean. So the verdict stays
#   Neural Cleanse's rule, and its false positives are reported, not hidden.
# * **The generator starts from the searched pattern** (its output bias is that pattern's logit),
#   so the staircase begins at a working trigger and spends its steps on entropy.
# * **How the defaults were chosen, and on which models.** Mask search: λ starts at 10⁻³ and moves
#   by ×1.2 / ÷1.2^1.5 per step (Neural Cleanse's schedule, compressed); the 90% ASR each mask
#   must keep matches the staircase's last ε. Its length (200 steps of 16 images per label) was set
#   by cost: at 100 steps the masks of the clean seed-0 model and of two of our victims were still
#   shrinking fast (30–120 pixels), at 250 they were near 10–60; 200 is what the budget allows. The
#   staircase got 60 steps
#   of 32 images per stage (was 100 × 64) so that the whole defense fits a quarter of the victim's
#   training time. The anomaly cut (2.0) is Neural Cleanse's published value. Successive halving of
#   the mask search (`mask_halving`) was on at first and turned off after a tiny test victim: the
#   stopped labels' sizes widened the MAD and hid its target (index 0.67).
#   None of these was tuned per attack; `benchmarks/trigger_agnostic.py` measures all of them on
#   every victim of `grids/families.yaml` and on three clean models with these values, misses
#   included.
# * **τ = 0.8** (the paper's value is unknown), MINE's learning rate 1e-3 (not given), a quarter of
#   D_h held out to measure ASR; everything else as the spec's defaults.
# * **Unlearning's defaults (notebook 03) were chosen on one of our victims.** The default since
#   issue #18 (outputs anchor, feature invariance with γ = 1, no early stop) was found on the
#   default BadNets 3×3 victim alone, after its re-tuned ASR was seen there
#   (`benchmarks/persistence.py`). It is one set for every attack; the families grid measures it on
#   the other victims, and notebook 03's "Choices of ours" lists what was tried and the misses.
#   Its schedule (3 epochs, the lr decayed along a cosine, instead of 10 at a constant lr) was
#   chosen later on three development victims of ours that no families row uses (BadNets, TrojanNN
#   and IMC 4×4 at new places, targets and seeds), by a rule fixed before any candidate ran, after
#   the 10-epoch run was seen to miss the cost bar on the families rows
#   (`benchmarks/unlearning_schedule.py`). Its path step (ρ = 0.5) was chosen the same way, on
#   those victims plus a WaNet and an all-to-all one, after two families rows were seen to re-learn
#   their backdoor (`benchmarks/path_step.py`). The families rows took no part in either choice.
#   They did take part in one decision since: a weight reset that the same rule picked on the same
#   six victims did worse on the families rows, and we kept the default without it
#   (`benchmarks/weight_reset.py`; the check, `schedule_study.confirmed`, can only veto a change).
#   All these victims are our own attacks, so a backdoor made elsewhere may fare otherwise.
