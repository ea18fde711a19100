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
# # 03 · Unlearn the backdoor
#
# Injection taught the model a memory: "this patch → the target label". BAERASER erases it the
# way it was written, in reverse: where the attacker *descended* the loss of triggered images
# towards the target, we *ascend* it, using the triggers recovered in notebook 02 (never the true
# one). No retraining from scratch, no training set: only the defender's clean holding set D_h.
#
# **Why not plain gradient ascent.** Ascent alone does not know which memories to leave alone,
# so it erodes the clean task too (catastrophic forgetting; shown below as `vanilla`). BAERASER
# adds two brakes, weighted by α (unlearning) and β (penalty):
#
#     L(θ) = CE(F_θ(x), y) − α · U(F_θ(x ⊕ Δ), y_p) + β · Σ_k ω_k (θ_k − θ0_k)²
#
# * the clean cross-entropy on D_h keeps the normal memory in use;
# * the **dynamic weighted penalty** holds back the parameters that clean data relies on: ω_k is
#   the diagonal Fisher information of the clean loss, recomputed from the current model at the
#   start of every epoch (so the weights follow the model as it moves);
# * U is the cross-entropy towards the pool label, ascended and **bounded** (capped once the pool
#   label's probability is below 1%), so ascent cannot run away.
#
# **What runs by default (issue #18, "erased for good").** The weight penalty above is the paper's
# brake, and it has a cost we measured: by holding the weights near θ0, the backdoored weights, it
# leaves the backdoor one short re-tuning away (see "Does it stay erased?" below). So the default
# holds the clean *outputs* instead of the weights, and adds a term that removes the trigger's
# features rather than only its label:
#
#     L(θ) = CE(F_θ(x), y) − α · U(F_θ(x ⊕ Δ), y_p) + β · KL(F_θ0(x) ‖ F_θ(x))
#            + γ · ‖φ_θ(x ⊕ Δ) − φ_θ(x)‖² / ‖φ_θ(x)‖²
#
# where φ is the penultimate feature vector (the input of the last linear layer) and the clean
# features φ_θ(x) are held fixed in that term. Every epoch runs (3, with the learning rate decayed
# along a cosine to 0) and the best validation DER is returned. `unlearn_anchor = "weights"`,
# `unlearn_invariance = 0`, `unlearn_early_stop = True`, `unlearn_epochs = 10`,
# `unlearn_schedule = "constant"` and `unlearn_path_rho = 0` give back the paper's reading
# (`PAPER_UNLEARNING` in the library). The last one turns off the path step: by default each SGD
# step takes its loss a little further along the path from θ0 (ρ = 0.5). "Choices of ours" says
# how this default was found and what it costs, and what was tried and not adopted
# (`unlearn_reset_fraction`, off).
#
# **Honest control.** D_h is split into a defense-train and a defense-validation part. Stopping
# and the choice of the returned model use only that validation part and the recovered triggers.
# The test split is touched only by the clearly marked evaluation code of this notebook.
#
# Beside it, in the same harness with the same D_h: the paper's baselines (fine-tuning,
# fine-pruning, NAD) and today's strongest peers (Neural Cleanse, i-BAU, SAU, ANP), each with its
# paper's (or BackdoorBench's) settings; where a CPU budget cut an iteration count, the module
# docstring says by how much and why.

# %% tags=["parameters"]
# the victim and its pool: found by the parameters of notebooks 01 and 02
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
holding_ratio = 0.05
seed = 0
trigger_form = "mask"  # as in notebook 02: one default configuration, no guess of the trigger
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
# BAERASER's unlearning
alpha = 1.0
beta = 1.0  # so β/α is 1 (see "Choices of ours")
unlearn_lr = 0.01
unlearn_epochs = 3  # with the cosine schedule (the paper's reading: 10 at a constant lr)
unlearn_batch_size = 128
unlearn_loss = "ce"  # ce: bounded CE ascent (the paper); complement: −log(1 − p), for saturated victims
bound = 4.605  # cap of the ce loss (−log 0.01)
unlearn_anchor = "outputs"  # outputs: KL to the suspect on clean D_h; weights: the Fisher penalty towards θ0 (the paper)
unlearn_invariance = 1.0  # γ: stamped images' penultimate features pulled onto the clean ones (0: off, the paper)
unlearn_invariance_at = "penultimate"  # where: the head's input; "stages": also each stage's output map
unlearn_early_stop = False  # True: stop at the first epoch that meets the targets (the paper's runs)
unlearn_schedule = "cosine"  # cosine: lr decayed to 0 over the run; constant: lr at every step (the paper's)
unlearn_path_rho = 0.5  # ρ: each step's loss taken at θ + ρ(θ − θ0), applied at θ (0: off, the paper)
unlearn_reset_fraction = 0.0  # q: each layer's q least-used weights (clean Fisher on D_h) zeroed first (0: off)
unlearn_channel_prune = 0.0  # r: each conv's r channels the recovered triggers move most zeroed first (0: off)
unlearn_head_shift = 0.0  # λ: head re-initialised, pushed off the suspect's by λ·⟨W, W_s⟩ (FST; 0: off)
unlearn_augment_invariance = 0.0  # γ_a: features also held under random patches, warps, blends (0: off)
confirm = False  # True: also require a flagged label's smallest mask to grow ≥ confirm_ratio× when unlearned
confirm_ratio = 2.0
# baselines
finetune_lr = 0.01
finetune_epochs = 10
fineprune_acc_drop = 0.05
nad_beta = 5000.0
nad_epochs = 10
# peers (today's strongest): the papers' / BackdoorBench's settings, iteration counts cut for a CPU budget
# (the families grid runs them at the settings that pass the sanity bar: grids/families.yaml)
nc_scale = "raw"  # raw: MAD of the mask norms (the paper's); log: of their logarithms
ibau_lr = 0.0001
ibau_rounds = 5
ibau_batch_size = 256
sau_lr = 0.0001
sau_epochs = 5
sau_batch_size = 256
sau_eps = 0.2
sau_train_mode = False  # True: BatchNorm in train mode in SAU's unlearning step (the authors' switch)
anp_eps = 0.4
anp_iterations = 300
anp_threshold = 0.2
anp_select = "threshold"  # threshold: the paper's cut; validation: BackdoorBench's sweep of cuts
compared = ["finetune", "fineprune", "nad", "nc", "ibau", "sau", "anp"]  # registered defenses run beside BAERASER
# the reactivation check (evaluation only): the attacker re-tunes each defended model
reactivation_check = True  # needs the true trigger: off by itself for your own model
reactivation_images = 1000  # the attacker's training images
reactivation_poisoned = 20  # of them stamped with the true trigger and relabelled
reactivation_lr = 0.01
reactivation_epochs = 5
reactivation_batch_size = 32
curve_images = 2000  # evaluation images behind the trade-off curves (evaluation only)
trace_every = 2  # BAERASER's curve gets a point every this many SGD steps (plotting only)
device = "auto"
precision = "auto"  # auto | fp32 | bf16: unlearning steps of BAERASER and plain ascent (auto: bf16 on CUDA only); the others run fp32
data_root = "../data"
download = True
artifacts_dir = "../artifacts"
reports_dir = "../reports"
report_name = "03_unlearn"

# %%
import dataclasses
import time
from pathlib import Path

import matplotlib.pyplot as plt

from baeraser_lib import defend, load_model
from baeraser_lib.artifacts import config_hash, file_digest, write_artifact
from baeraser_lib.data import load_experiment_data, seeded_subset
from baeraser_lib.defenses import DEFENSES
from baeraser_lib.defenses.pool import obtain_pool
from baeraser_lib.lab.claims import REACTIVATION_MARGIN, unlearning_checks
from baeraser_lib.lab.plots import metric_bars
from baeraser_lib.lab.reports import write_report
from baeraser_lib.metrics import der, evaluate
from baeraser_lib.params import attack_config, defense_config, reactivation_config, train_config
from baeraser_lib.reactivation import compare, reactivation
from baeraser_lib.train import check_precision, pick_device
from baeraser_lib.victims import find_model, obtain_model

notebook_start = time.perf_counter()
# every defense's config from the parameters above, through the library's one mapping (`params`)
configs = {name: defense_config(name, globals()) for name in ["baeraser", "vanilla", *compared]}
recovery_cfg = configs["baeraser"].recovery
dev = pick_device(device)
check_precision(precision)  # before any compute
data = load_experiment_data(dataset, data_root, holding_ratio=holding_ratio, seed=seed,
                            train_subset=train_subset, download=download)
if model_path is None:  # notebook 01's artifact: its true trigger is known (for the EVALUATION cells only)
    victim = find_model(artifacts_dir, train_config(globals()), attack_config(globals()))
    suspect, suspect_id, train_seconds = victim.model, victim.path.name, victim.train_seconds
    true_trigger, true_rule = victim.trigger, victim.rule
    print(f"victim {suspect_id}: trained in {train_seconds:.0f} s")
else:  # your own model: nobody here knows its trigger, so only clean accuracy is scored
    suspect = load_model(model_path, None if model_def else model, data.info.num_classes, model_def)
    suspect_id, train_seconds, true_trigger, true_rule = file_digest(model_path), None, None, None
    print(f"victim: external checkpoint {model_path} (sha256 {suspect_id})")
holding_key = {"dataset": dataset, "holding_ratio": holding_ratio, "seed": seed, "n": len(data.holding)}
pool, pool_meta, pool_path, _ = obtain_pool(suspect, suspect_id, data.holding, data.info.num_classes,
                                            recovery_cfg, artifacts_dir, holding_key, device=dev)
print(f"pool {pool_path.name}: flagged {pool_meta.get('flagged')}, pooled {pool.labels}, recovered in "
      f"{pool_meta['seconds_recovery']:.1f} s")

# %% [markdown]
# ## Evaluation code (the only place the test split and the true trigger appear)
# `score` measures a model on the evaluation split with the attacker's true trigger. The defenses
# below are called with the model, D_h and (BAERASER only) the recovered pool, nothing else.

# %%
curve_set = seeded_subset(data.evaluation, min(curve_images, len(data.evaluation)), seed)


def score(m, on=data.evaluation):
    out = evaluate(m, on, true_trigger, true_rule, device=dev)
    return out if true_trigger is not None else {**out, "asr": float("nan"), "robust_acc": float("nan")}


def curve(m, epoch):
    """Evaluation figures per epoch, for the trade-off plot only (never fed back to the defense)."""
    return {f"test_{k}": v for k, v in score(m, curve_set).items()}


before = score(suspect)
results = {"none": {**before, "seconds": 0.0}}
print("no defense:", {k: round(v, 4) for k, v in before.items()})

# %% [markdown]
# ## Run every defense on the same D_h

# %%
histories, defended = {}, {}


def run(name, **given):
    """Run registered defense `name` on (model, D_h) through the public `defend`; `given` is what
    an earlier step computed from the same inputs (recovery's pool, NAD's fine-tuned teacher). Its
    seconds exclude the plotting-only evaluation it was asked to log."""
    out = defend(suspect, data.holding, data.info.num_classes, name, configs[name], device=dev,
                 precision=precision if DEFENSES[name].bf16 else "fp32", **given)
    histories[name], defended[name] = out.history, out
    results[name] = {**score(out.model), "seconds": out.seconds["total"]}
    print(f"{name:>10}: " + "  ".join(f"{k} = {v:.4f}" for k, v in results[name].items()))
    return out


out = run("baeraser", pool=pool, per_label=pool_meta["per_label"], flagged=pool_meta["flagged"], on_epoch=curve,
          trace_every=trace_every)  # the pool notebook 02 recovered (the same D_h), and its verdict
verdict = {"backdoored": out.backdoored, "flagged": out.flagged, "growth": {str(k): g for k, g in out.growth.items()}}
if out.history[0].get("empty_pool"):  # nothing unlearned: the model is returned as it came; one row for the plots
    out.history[0].update({f"test_{k}": v for k, v in before.items()}, val_acc=float("nan"),
                          val_recovered_asr=float("nan"))
print(f"verdict: {'backdoored, flagged ' + str(verdict['flagged']) if verdict['backdoored'] else 'clean'}"
      + (f"; mask growth after unlearning {verdict['growth']} (confirmed at ≥ {confirm_ratio}×)" if confirm else ""))
out = run("vanilla", pool=pool, on_epoch=curve)  # plain ascent on the whole pool: catastrophic forgetting
if out.history[0].get("empty_pool"):  # recovery pooled no suspect: plain ascent had nothing to act on either
    out.history[0].update({f"test_{k}": v for k, v in before.items()}, val_acc=float("nan"),
                          val_recovered_asr=float("nan"))
for name in compared:
    if name == "nad" and "finetune" in defended:  # NAD's teacher is the fine-tuned model: count its time too
        run("nad", teacher=defended["finetune"].model)
        results["nad"]["seconds"] += results["finetune"]["seconds"]
    else:
        run(name)
for name, r in results.items():
    r["der"] = der(before["clean_acc"], r["clean_acc"], before["asr"], r["asr"])

# %% [markdown]
# ## Side by side
# DER (defense effectiveness rating) = (max(0, ΔASR) − max(0, ΔAcc) + 1) / 2, Δ = before − after:
# 1 is a perfect repair, 0.5 changing nothing.

# %%
print(f"{'method':>10} {'clean acc':>9} {'ASR':>7} {'robust acc':>10} {'DER':>6} {'seconds':>8}")
for name, r in results.items():
    print(f"{name:>10} {r['clean_acc']:>9.4f} {r['asr']:>7.4f} {r['robust_acc']:>10.4f} {r['der']:>6.3f} "
          f"{r['seconds']:>8.1f}")
fig = metric_bars({k: v for k, v in results.items()}, ["clean_acc", "asr", "robust_acc", "der"])
plt.show()

# %% [markdown]
# ## The trade-off along the way
# ASR and clean accuracy as unlearning proceeds: BAERASER every `trace_every` SGD steps, plain
# ascent after every epoch (on a fixed part of the evaluation split; the right panel is what the
# defense itself steered by: its validation part of D_h and the recovered triggers). The grey
# line marks the epoch BAERASER returned.

# %%
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
for name, style in (("baeraser", "-"), ("vanilla", "--")):
    h = histories[name]
    ep = [r["epoch"] for r in h]
    ax.plot(ep, [r["test_asr"] for r in h], style, marker="o", label=f"{name}: ASR")
    ax.plot(ep, [r["test_clean_acc"] for r in h], style, marker="s", label=f"{name}: clean acc")
    ax2.plot(ep, [r["val_recovered_asr"] for r in h], style, marker="o", label=f"{name}: recovered-trigger ASR")
    ax2.plot(ep, [r["val_acc"] for r in h], style, marker="s", label=f"{name}: validation acc")
chosen = next(r for r in histories["baeraser"] if r.get("chosen"))
ax.axvline(chosen["epoch"], color="gray", lw=0.8)
ax.set(xlabel="epoch", ylabel="fraction", title="evaluation split (true trigger)", ylim=(-0.02, 1.02))
ax2.set(xlabel="epoch", title="defender's view (D_h validation, recovered triggers)", ylim=(-0.02, 1.02))
for a in (ax, ax2):
    a.legend(fontsize=7)
    a.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Does it stay erased? The reactivation check
# A low ASR right after a defense does not show that the backdoor is gone. Min et al. (NeurIPS
# 2024, "superficial safety") found purified models that re-learn their backdoor from a handful
# of poisoned samples far faster than a model that never had one. So we play that attacker: they
# get each defended model back and re-tune it on a small set of their own, `reactivation_images`
# training images of which `reactivation_poisoned` carry the TRUE trigger and the attack's label
# (SGD, lr `reactivation_lr`, momentum 0.9, `reactivation_epochs` epochs, batch
# `reactivation_batch_size`). The clean reference model of the same recipe, never backdoored,
# gets the same re-tuning: it says how fast the backdoor is learned from scratch. A backdoor is
# erased for good when the defended model re-learns it no faster: its ASR after re-tuning at most
# the reference's + 0.10.
#
# Evaluation only: it reads the true trigger and training images, and nothing it measures reaches
# a defense. The query-only attacker (the unstamped images labelled with the model's own answers,
# as an attacker who can only query it would) runs for BAERASER, the undefended victim and the
# reference.

# %%
reactivated, query_only = {}, {}
if true_trigger is not None and reactivation_check:
    react_cfg = reactivation_config(globals())
    how = {k: victim.meta.get(k, "auto") for k in ("precision", "layout")}  # trained as the victim was
    reference = obtain_model(train_config(globals()), None, data, artifacts_dir, device=dev, progress=False,
                             **how).model
    models = {"clean reference": reference, "none": suspect, **{k: d.model for k, d in defended.items()}}
    scored = {"none": before, **{k: results[k] for k in defended if k in results}}  # measured above already
    raw = {k: reactivation(m, data.train, data.evaluation, true_trigger, true_rule, react_cfg, device=dev,
                           before=scored.get(k)) for k, m in models.items()}
    reactivated = compare({k: r for k, r in raw.items() if k != "clean reference"}, raw["clean reference"])
    reactivated["clean reference"] = raw["clean reference"]
    queried_cfg = dataclasses.replace(react_cfg, labels="queried")
    query_only = {k: reactivation(models[k], data.train, data.evaluation, true_trigger, true_rule, queried_cfg,
                                  device=dev, before={"asr": raw[k]["asr_before"], "clean_acc": raw[k]["clean_acc_before"]})
                  for k in ("clean reference", "none", "baeraser")}
    for name, r in reactivated.items():
        if name in results:
            results[name]["reactivated_asr"] = r["asr_after"]
    print(f"{'model':>16} {'ASR':>7} {'ASR re-tuned':>12} {'acc re-tuned':>12} {'query-only':>10}")
    for name, r in reactivated.items():
        q = query_only.get(name)
        print(f"{name:>16} {r['asr_before']:>7.4f} {r['asr_after']:>12.4f} {r['clean_acc_after']:>12.4f} "
              + (f"{q['asr_after']:>10.4f}" if q else f"{'':>10}"))
    bar = raw["clean reference"]["asr_after"] + REACTIVATION_MARGIN
    fig, ax = plt.subplots(figsize=(9, 3))
    names_ = list(reactivated)
    ax.bar(range(len(names_)), [reactivated[k]["asr_before"] for k in names_], 0.4, label="after the defense")
    ax.bar([i + 0.4 for i in range(len(names_))], [reactivated[k]["asr_after"] for k in names_], 0.4,
           label="after the attacker's re-tuning")
    ax.axhline(bar, color="gray", ls="--", lw=0.8, label=f"clean reference re-tuned + {REACTIVATION_MARGIN:g}")
    ax.set_xticks([i + 0.2 for i in range(len(names_))], names_, rotation=30, fontsize=8)
    ax.set(ylabel="ASR (true trigger)", ylim=(0, 1.02))
    ax.legend(fontsize=7)
    fig.tight_layout()
    plt.show()
else:
    print("reactivation check skipped: " + ("no true trigger (your own model)" if true_trigger is None
                                            else "reactivation_check is False"))

# %% [markdown]
# ## The defended model, saved
# BAERASER's repaired model goes to the artifact cache like notebook 01's victims: safetensors
# weights with a JSON sidecar naming the suspect, the defense, its config and its verdict. Load it
# with `baeraser_lib.artifacts.load_weights` into the suspect's architecture.

# %%
defense_id = config_hash({"suspect": suspect_id, "holding": holding_key, "method": "baeraser"}, configs["baeraser"])
saved = artifacts_dir + f"/defended/{defense_id}"
if not Path(saved, "meta.json").is_file():
    write_artifact(saved, {k: v for k, v in defended["baeraser"].model.state_dict().items()},
                   {"kind": "defended", "suspect": suspect_id, "method": "baeraser", "holding": holding_key,
                    **defended["baeraser"].summary()})
print(f"defended model: {saved}")

# %% [markdown]
# ## Key figures
# Written to `reports/03_unlearn.json`. Cost: recovery + unlearning against the victim's own
# training time (retraining-based unlearning would cost 100% of it, or more).

# %%
drop_points = 100 * (before["clean_acc"] - results["baeraser"]["clean_acc"])
cost_ratio = (pool_meta["seconds_recovery"] + results["baeraser"]["seconds"]) / train_seconds if train_seconds \
    else float("nan")  # an external model's training time is unknown
figures = {
    "dataset": dataset,
    "attack": attack,
    "methods": results,
    "victim_train_seconds": train_seconds,
    "victim_id": suspect_id,
    "defended_model": str(saved),
    "recovery_seconds": pool_meta["seconds_recovery"],
    "precision": precision,
    "cost_ratio": cost_ratio,
    "baeraser_acc_drop_points": drop_points,
    "baeraser_chosen_epoch": chosen["epoch"],
    "backdoored_verdict": verdict["backdoored"],
    "flagged": verdict["flagged"],
    "mask_growth": verdict["growth"],
    "confirm_ratio": confirm_ratio,
    "alpha": alpha,
    "beta": beta,
    "reactivation": {"config": dataclasses.asdict(react_cfg), "models": reactivated, "query_only": query_only}
    if reactivated else None,
    "notebook_seconds": time.perf_counter() - notebook_start,
}
write_report(reports_dir, report_name, figures)
checks = {} if true_trigger is None else unlearning_checks(results, drop_points, cost_ratio, reactivated)
print(f"accuracy drop {drop_points:.2f} points; cost {100 * cost_ratio:.0f}% of the victim's training time; "
      f"vanilla ascent: clean acc {results['vanilla']['clean_acc']:.4f} "
      f"({100 * (before['clean_acc'] - results['vanilla']['clean_acc']):.1f} points lost)")
for claim, ok in checks.items():
    print(f"{'met   ' if ok else 'MISSED'}  {claim}")

# %% [markdown]
# ## The peers, as written here
# Each peer is one module of `baeraser_lib/defenses/`, written from its paper, and sees the model,
# D_h and the number of classes, nothing else. Settings are the paper's or BackdoorBench's; three
# iteration counts are cut to a CPU budget of a few minutes each (fixed from a timing run, never
# from a result):
# * **Neural Cleanse** (`nc`): a mask and pattern per label with the paper's cost schedule (200
#   steps, as our recovery's mask search), the MAD anomaly index of the raw mask norms, cut 2;
#   unlearning fine-tunes on D_h with 20% of it stamped with the flagged labels' reversed triggers.
#   No label flagged: the model is returned unchanged.
# * **i-BAU** (`ibau`): BackdoorBench's config (Adam lr 1e-4, 5 rounds, K = 5, batch 256); the
#   outer step uses the implicit hypergradient through K fixed-point iterations.
# * **SAU** (`sau`): BackdoorBench's config (Adam with AMSGrad, lr 1e-4, L∞ 0.2, PGD 5 steps of
#   0.2, both models in eval mode), **5 epochs** instead of the paper's 100. `sau_train_mode = True`
#   is the authors' own switch: BatchNorm in train mode for the unlearning step, which they note
#   lowers the ASR at some accuracy.
# * **ANP** (`anp`): every BatchNorm layer wrapped with masks and ±0.4 neuron perturbations,
#   α 0.2, mask lr 0.2, prune below 0.2; **300 iterations** instead of the paper's 2,000.
#
# Whether each one repairs the default victim at these settings, and which other setting does
# where it does not, is measured in `benchmarks/peer_sanity.py` (the README has the figures).

# %% [markdown]
# ## Choices of ours (interpretation of the paper)
# * **A model judged clean is left alone** (ours): when notebook 02 flagged no label (or no flagged
#   label's generator reached τ) BAERASER returns the model unchanged. `confirm = True` adds a
#   second test after unlearning (does the flagged label's smallest mask grow ≥ `confirm_ratio`×?)
#   and reruns unlearning on the confirmed labels only; off by default, because it did not tell
#   backdoors from natural shortcuts in our measurements.
# * **Eq. 4** is not available; the loss above is our reading of the paper's description.
# * **ω** is the diagonal Fisher information of the clean loss on a few batches of D_h,
#   recomputed at every epoch start and normalised to mean 1.
# * **The penalty is applied by its proximal step** after each SGD step on the other two terms
#   (θ ← θ0 + (θ − θ0)/(1 + 2·lr·β·ω)): β·ω is too stiff for plain SGD at a useful learning rate.
# * **Bound**: the unlearning loss is capped at −log 0.01 per image. CE ascent has almost no
#   gradient on a saturated backdoor (p(y_p) ≈ 1); `unlearn_loss = "complement"` (minimise
#   −log(1 − p(y_p))) is the option for such victims. On this default victim it erased the
#   recovered triggers faster but generalised less to the true one, so `ce` stays the default.
# * **Defaults**: β/α = 1, SGD lr 0.01 with momentum 0.9, batch 128, at most 10 epochs (3 with a
#   cosine decay since the schedule study, below). The paper's β/α scale does not carry over: our ω is normalised to mean 1 and applied by a proximal
#   step. In our development sweep of β ∈ {1, 3, 10, 100} on the default victim, β = 1 gave the
#   best DER and β = 100 left much of the backdoor in place; notebook 04 sweeps β/α properly. The
#   authors' lr 1e-4 barely moves the model within 10 epochs here.
# * **Model choice**: the epoch with the best DER on D_h's validation part, computed with the
#   recovered triggers (the paper's own trade-off, on the defender's data only); stop once the
#   recovered triggers' validation ASR is ≤ 1% within 2 points of the starting validation
#   accuracy. Until the attacks milestone the choice was "lowest recovered ASR within 2 points";
#   on the IMC victim that rule rejected epoch 1 (recovered ASR 0.4%, but 2.17 points of
#   validation accuracy lost, on 600 images) and kept a later epoch where the backdoor had partly
#   returned (a diagnostic run showed it). We changed the rule after seeing that, so say it here.
# * **Erased for good: the default since issue #18** (ours, not the paper's). The bar: after
#   an attacker re-tunes the defended model (1,000 images, 20 stamped with the true trigger, SGD
#   lr 0.01, 5 epochs), its ASR is at most the never-backdoored model's + 0.10. The paper's reading
#   above (weight anchor, early stop) re-learned the backdoor to ≈ 0.98 on the default victim. In a
#   development harness on that victim (one attacker seed each, then three in
#   `benchmarks/persistence.py`) we tried, in order: no anchor (0.63), the outputs anchor
#   (0.59), the outputs anchor over all 10 epochs (0.27), the weight anchor re-centred each
#   epoch, freeing the weights the recovered triggers lean on, a PAM-like step along the path
#   from θ0 and a look-ahead attacker step (all ≥ 0.79 with the weight anchor on), and feature
#   invariance with the weight anchor (0.12 after one epoch, back to 0.99 as the anchor pulled
#   the weights home). What held: the outputs anchor **and** feature invariance **and** the
#   ascent, together (with the ascent off, 0.99 again). γ = 1 is the term's natural scale (a
#   relative squared distance) and was not swept; epochs, lr and batch are the paper-reading
#   defaults, unchanged; early stopping is off because the first epochs that meet the ASR target
#   have lost the most accuracy (the clean task comes back over the following epochs).
#   On the default victim, three attacker seeds: re-tuned ASR 0.038 against the reference's
#   0.051 (the bar 0.151), ASR 0.0011, 1.33 points lost. **The cost**: all 10 epochs ran, about
#   105 s instead of about 11 s (`benchmarks/persistence.py`), so BAERASER's share of the victim's training time rose above
#   the 25% target. The design was fixed on the default victim only; the families grid measures
#   it on every other attack.
# * **3 epochs with a cosine decay of the lr: the schedule since issue #18's cost study** (ours).
#   Cutting the 10 constant-lr epochs to fit the cost bar loses accuracy: the first epoch's ascent
#   costs 3 to 19 points and the later epochs win them back (`benchmarks/unlearning_budget.py`).
#   Decaying the same lr (0.01 → 0, cosine, the textbook schedule for a short run) lets a short
#   run settle. We chose the length on development victims that no families row uses (BadNets
#   4×4, TrojanNN 4×4 and IMC 4×4 at new places, targets and seeds; a blended one was judged
#   clean by recovery and had nothing to unlearn), among candidates fixed in advance (cosine over
#   2, 3, 4, 5 epochs; constant over 10), by a rule fixed in advance: the fewest epochs meeting
#   every bar on every victim, else the most bars met, ties to fewer epochs. No candidate met all
#   four bars everywhere; 3 and 5 epochs tied at 10 of 12 and 3 won the tie. The families rows,
#   where it is scored, took no part (`benchmarks/unlearning_schedule.py`; the README has its
#   tables).
# * **A path step, ρ = 0.5: the default since issue #18's path study** (ours). Each SGD step takes
#   the loss at θ + ρ·(θ − θ0), a step further along the path from the suspect θ0 through the
#   current θ, and applies its gradient at θ (Min et al.'s PAM, NeurIPS 2024, in a simplified
#   form). BatchNorm's running statistics are not taken at those shifted weights; they are
#   recomputed from the clean training part of D_h at each epoch's end. We hoped it would keep the
#   backdoor erased where the default did not (WaNet and all-to-all rows). **It did not**: on the
#   development victims the re-tuned ASR rose with ρ (asking the loss to hold further along the
#   path lets θ itself move less from θ0). What it did was lose less accuracy. The rule fixed in
#   advance (the most (victim, bar) pairs met over #18's four bars on development victims outside
#   the families grid, ρ ∈ {0.5, 1, 2}, the old default winning ties) chose ρ = 0.5: 17 pairs of
#   20 against 15. On the 13 families rows, which took no part, all four bars now hold on 8 rows
#   (5 before), the accuracy bar on 12 (9); the WaNet row's re-tuned ASR rose from 0.32 to 0.84,
#   a miss either way (`benchmarks/path_step.py`; the README has its tables). `unlearn_path_rho = 0`
#   turns it off.
# * **Tried and not adopted: a weight reset** (`unlearn_reset_fraction`, off). Before the first
#   step, each convolution's and linear layer's weights are ranked by the diagonal Fisher of the
#   clean loss on the training part of D_h (at θ0), and the lowest q are set to zero, free to
#   regrow. The reasoning is fine-pruning's: a backdoor's own detectors may live in what clean
#   data leaves unused, and a detector left in place is one short re-tuning from the target
#   again, where a clean model must grow one. No trigger is guessed. On the path study's six
#   development victims, among q ∈ {0 (the default), 0.1, 0.3, 0.5} fixed in advance, the path
#   study's rule picked q = 0.1: 18 pairs of 20 against 17. It kept the WaNet victim erased
#   (re-tuned ASR 0.47 → 0.024, the reference 0.015) but lost 2.29 points there; it raised the
#   re-tuned ASR of the BadNets, TrojanNN and IMC victims (BadNets 4×4 0.11 → 0.42, against a bar
#   of 0.42); its extra pair was the all-to-all victim's ASR (0.153 → 0.007). q ≥ 0.3 lost 10 to
#   77 points. **On the 13 families rows it did worse**: all four bars on 4 rows against 8,
#   accuracy on 9 against 12, staying erased on 8 against 9 (WaNet 0.84 → 0.94). So it is not the
#   default: a change must also meet at least as many (row, bar) pairs on the families rows as the
#   default it would replace. We wrote that confirmation after seeing these figures. It can only
#   veto a change, never pick one, but it makes the families rows part of keeping the default.
#   The study ran with the path step on, which evaluated the zeroed weights at −0.5·θ0, not at 0;
#   a reset without it is untried (`benchmarks/weight_reset.py`; the README has the tables).
# * **Tried and not adopted: invariance at every stage** (`unlearn_invariance_at = "stages"`, off).
#   The invariance term above compares penultimate features only, so the layers below may still
#   detect the trigger. NAD, the one peer whose re-tuned ASR met the bar on every families row (on
#   blended and sig it had not erased the backdoor to begin with), aligns its student at the
#   output of every stage. This option also pulls the feature map entering each
#   downsampling layer (a strided convolution or a pool; on ResNet-18 the outputs of layer1 to
#   layer3) of a stamped image onto its clean image's, the term the mean over the taps. On the path
#   study's six development victims, with γ ∈ {1, 2, 4} fixed in advance beside the default, the
#   rule kept the default: 16 pairs of 20, tied by γ = 2 (a tie keeps the default). It lowered the
#   WaNet victim's re-tuned ASR (0.47 → 0.30) but not to its bar (0.115); the all-to-all victim
#   re-learned as before (`benchmarks/stage_invariance.py`; the README has the table).
# * **Tried and not adopted: pruning the channels the recovered triggers lean on**
#   (`unlearn_channel_prune`, off). Before the first step, the defender's clean images are stamped
#   with the recovered triggers, every convolution's output channels are scored by how far the
#   stamps move them (relative to their clean size), and the filters of the top fraction r in each
#   convolution are zeroed, free to regrow (the third candidate; Neural Cleanse prunes the
#   neurons its reversed trigger excites, in one layer). With r ∈ {0.05, 0.1, 0.2} fixed in advance,
#   the rule kept the default (16 pairs of 20 against 13 and 12). r = 0.2 kept the WaNet victim
#   erased (re-tuned ASR 0.47 → 0.026) but lost 2.7 to 5.5 points on every victim, and the pruned
#   BadNets, TrojanNN and IMC victims re-learned more than the default's, as after the weight reset
#   (`benchmarks/trigger_channels.py`; the README has the table).
# * **Tried and not adopted: a shifted head** (`unlearn_head_shift`, off). Feature-shift tuning's
#   idea (FST, Min et al., NeurIPS 2023): the head is re-initialised, λ·⟨W, W_suspect⟩ joins the
#   loss so that the new head points away from the suspect's, and ‖W‖ is put back at the suspect's
#   after each step; the features the old head read must then shift. With λ ∈ {0.1, 0.2, 0.4}
#   fixed in advance (0.2 is FST's published CIFAR-10 setting), the rule kept the default (16 pairs
#   of 20 against 11, 10 and 8). Every λ lost more than 2 points on every development victim, and
#   the shifted BadNets, TrojanNN and IMC victims re-learned far more than the default's (TrojanNN
#   0.07 → 0.79–0.99), as after the weight reset and the channel pruning; WaNet came down
#   (0.47 → 0.28) but not to its bar (`benchmarks/head_shift.py`; the README has the table).
# * **Tried and not adopted: invariance under random perturbations** (`unlearn_augment_invariance`,
#   off). The invariance term above uses the recovered triggers only, and on the WaNet and
#   all-to-all rows they do not look like the true trigger. This option also passes a copy of each
#   clean batch with one random generic change per image (a square of random pixels, a smooth
#   warp of at most 1.5 px, a faint noise blend: standard augmentations, and the kinds our attack
#   families take, sizes fixed in advance) and holds its penultimate features on the clean ones'.
#   With γ_a ∈ {0.5, 1, 2} fixed in advance, the rule kept the default (16 pairs of 20 against 14,
#   13 and 14). The WaNet victim re-learned more (0.47 → 0.56–0.69), the all-to-all victim as
#   before, and the third batch made unlearning 26–54% slower
#   (`benchmarks/augment_invariance.py`; the README has the table).
