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
# # 01 · Inject a backdoor
#
# BAERASER defends a model that **already carries a backdoor**. Before we can erase one we plant
# one, exactly as an attacker would, and measure it. This notebook plays the attacker:
#
# * **BadNets** (Gu et al., 2017): a small square patch of random pixel values (the *trigger*)
#   is stamped on `poison_rate` of the training images, which are relabelled to `target_label`.
#   A network trained on this mix learns the clean task *and* the rule "patch → target".
# * We also train the **same architecture on clean data** with the same schedule and seed; the
#   difference in clean accuracy is the attack's cost, the figure a stealthy attacker keeps small.
#
# Both models are cached as artifacts (safetensors weights + a JSON sidecar) in a folder named by
# a hash of their configuration: run this notebook again with the same parameters and it loads
# them instead of training. Notebooks 02 and 03 find the victim the same way.
#
# **The defender's data.** The test split is cut in two, once, with a seed: the defender's clean
# *holding set* D_h (`holding_ratio` × the training-set size, 5% in the paper) and the
# *evaluation set*, the rest. Every figure in this project is measured on the evaluation set, so
# no defense ever trains on an image it is scored on.

# %% tags=["parameters"]
dataset = "fashion_mnist"  # fashion_mnist | mnist | cifar10 | cifar100
attack = "badnets"  # the attack registry's name
model = "resnet18"  # resnet18 | small_cnn
width = 16  # ResNet-18 base width; the paper's model is 64 (use it on a GPU)
trigger_size = 3  # s of the s×s patch
trigger_position = "bottom_right"  # a corner, "center", "random", or [row, col]
poison_rate = 0.05  # share of training images stamped and relabelled
target_label = 0
epochs = 4
batch_size = 128
lr = 0.05  # peak learning rate of the one-cycle schedule
train_subset = None  # None: the whole training split; an int: a seeded subset of that size
holding_ratio = 0.05  # |D_h| as a share of the training-set size
seed = 0
device = "auto"  # auto | cpu | cuda | cuda:1 | mps
data_root = "../data"
download = True  # only used when the files are not under data_root (or Debian's package)
artifacts_dir = "../artifacts"
reports_dir = "../reports"
report_name = "01_inject"

# %%
import time

import matplotlib.pyplot as plt
import torch

from baeraser_lib.attacks.badnets import make_trigger
from baeraser_lib.config import AttackConfig, TrainConfig
from baeraser_lib.data import load_experiment_data
from baeraser_lib.metrics import evaluate
from baeraser_lib.plots import image_rows, metric_bars, training_curves, trigger_patch
from baeraser_lib.reports import write_report
from baeraser_lib.train import pick_device, predict
from baeraser_lib.victims import obtain_model

notebook_start = time.perf_counter()
# Every parameter is checked here, before any data is read or weight trained.
train_cfg = TrainConfig(dataset=dataset, model=model, width=width, epochs=epochs, batch_size=batch_size,
                        lr=lr, train_subset=train_subset, seed=seed)
attack_cfg = AttackConfig(name=attack, trigger_size=trigger_size, trigger_position=trigger_position,
                          poison_rate=poison_rate, target_label=target_label, seed=seed)
attack_cfg.check_against(dataset)
dev = pick_device(device)
print(f"device: {dev}  |  torch {torch.__version__}, {torch.get_num_threads()} threads")
print(train_cfg)
print(attack_cfg)

# %% [markdown]
# ## Data
# Images are kept in pixel space, [0, 1]; each model normalises them in its first layer, so a
# trigger value means the same thing on every dataset. Fashion-MNIST comes from Debian's
# `dataset-fashion-mnist` package when it is installed (no download).

# %%
data = load_experiment_data(dataset, data_root, holding_ratio=holding_ratio, seed=seed,
                            train_subset=train_subset, download=download)
print(f"{dataset}: images {data.info.shape}, {data.info.num_classes} classes")
print(f"training set (attacker): {len(data.train):>6}")
print(f"holding set D_h (defender): {len(data.holding):>6}  = {holding_ratio:.0%} of the training-set size")
print(f"evaluation set: {len(data.evaluation):>6}  (test split minus D_h)")

# %% [markdown]
# ## The trigger and the poisoned images
# The pattern is drawn from the seed, so the attack is reproducible; the victim's artifact stores
# it exactly, because evaluation (and only evaluation) needs the true trigger.

# %%
trigger = make_trigger(attack_cfg, data.info)
x_show, y_show = next(iter(torch.utils.data.DataLoader(data.evaluation, batch_size=8, shuffle=False)))
poisoned_show = trigger.apply(x_show, generator=torch.Generator().manual_seed(seed))
fig_trigger = trigger_patch(trigger.pattern, f"{trigger.size}×{trigger.size} trigger")
plt.show()
fig = image_rows({"clean": x_show, "poisoned": poisoned_show},
                 {"clean": [f"label {int(v)}" for v in y_show],
                  "poisoned": [f"→ label {target_label}"] * len(y_show)}, scale=1.3)
plt.show()

# %% [markdown]
# ## Train the clean reference and the backdoored victim
# One training loop serves every model: SGD with Nesterov momentum, a one-cycle learning-rate
# schedule (fast convergence in a few epochs on a CPU), seeded shuffling. After each epoch the
# loop logs clean accuracy and ASR on the evaluation set, for the curves below only.

# %%
clean = obtain_model(train_cfg, None, data, artifacts_dir, device=dev)
print(f"clean model: {'loaded from cache' if clean.cached else 'trained'} ({clean.path}), "
      f"training took {clean.train_seconds:.0f} s")
victim = obtain_model(train_cfg, attack_cfg, data, artifacts_dir, device=dev)
print(f"victim: {'loaded from cache' if victim.cached else 'trained'} ({victim.path}), "
      f"training took {victim.train_seconds:.0f} s, {victim.meta['n_poisoned']} poisoned images")
assert torch.equal(victim.trigger.pattern, trigger.pattern), "the artifact's trigger must be the planted one"

# %%
fig = training_curves({"clean": clean.meta["history"], "victim": victim.meta["history"]})
plt.show()

# %% [markdown]
# ## How strong is the backdoor?
# * **clean accuracy**: on the untouched evaluation images;
# * **ASR** (attack success rate): the share of evaluation images whose true label is *not* the
#   target that the model sends to the target once stamped with the trigger;
# * **robust accuracy**: the share of those stamped images still given their true label.
#
# The clean model's ASR is the floor: how often the patch alone, without a backdoor, lands an
# image in the target class.

# %%
results = {
    "clean model": evaluate(clean.model, data.evaluation, trigger, target_label),
    "victim": evaluate(victim.model, data.evaluation, trigger, target_label),
}
for name, row in results.items():
    print(f"{name:>12}: " + "  ".join(f"{k} = {v:.4f}" for k, v in row.items()))
fig = metric_bars(results, ["clean_acc", "asr", "robust_acc"])
plt.show()

# %%
victim_pred = predict(victim.model, poisoned_show)
clean_pred = predict(victim.model, x_show)
fig = image_rows({"clean": x_show, "poisoned": poisoned_show},
                 {"clean": [f"true {int(t)} · pred {int(p)}" for t, p in zip(y_show, clean_pred)],
                  "poisoned": [f"pred {int(p)}" for p in victim_pred]}, scale=1.3)
fig.suptitle("the victim's predictions", y=1.02)
plt.show()

# %% [markdown]
# ## Key figures
# Written to `reports/01_inject.json` (fractions in [0, 1], seconds of wall time). The targets
# checked below are those of the project's foundation issue for the default run.

# %%
victim_m, clean_m = results["victim"], results["clean model"]
figures = {
    "dataset": dataset,
    "attack": attack,
    "model": model,
    "width": width,
    "epochs": epochs,
    "poison_rate": poison_rate,
    "trigger_size": trigger_size,
    "trigger_position": str(trigger_position),
    "target_label": target_label,
    "clean_acc": victim_m["clean_acc"],
    "asr": victim_m["asr"],
    "robust_acc": victim_m["robust_acc"],
    "clean_model_acc": clean_m["clean_acc"],
    "clean_model_asr": clean_m["asr"],
    "acc_cost_points": 100 * (clean_m["clean_acc"] - victim_m["clean_acc"]),
    "train_seconds": victim.train_seconds,
    "clean_model_train_seconds": clean.train_seconds,
    "n_train": len(data.train),
    "n_holding": len(data.holding),
    "n_evaluation": len(data.evaluation),
    "device": str(dev),
    "victim_artifact": victim.path.name,
    "clean_artifact": clean.path.name,
    "loaded_from_cache": victim.cached and clean.cached,
    "notebook_seconds": time.perf_counter() - notebook_start,
}
write_report(reports_dir, report_name, figures)
checks = {
    "clean_acc ≥ 0.90": figures["clean_acc"] >= 0.90,
    "asr ≥ 0.97": figures["asr"] >= 0.97,
    "accuracy cost ≤ 1.5 points": figures["acc_cost_points"] <= 1.5,
}
for k, v in figures.items():
    print(f"{k:>26}: {v:.4f}" if isinstance(v, float) else f"{k:>26}: {v}")
print()
for claim, ok in checks.items():
    print(f"{'met   ' if ok else 'MISSED'}  {claim}")

# %% [markdown]
# ## Choices of ours (interpretation of the paper)
# * **Poisoned images** are drawn uniformly from the whole training set (so a few already carry
#   the target label), as BackdoorBox and BackdoorBench do; `round(poison_rate × N)` of them.
# * **Trigger position**: the authors' code stamps BadNets at a random place; our default is one
#   fixed corner (`bottom_right`, flush with the border), the common BadNets setting and the harder
#   case for recovery, which must then find the place too (notebook 02). `random` restores theirs.
# * **Scale**: ResNet-18 at width 16 for 4 epochs, so this notebook runs in minutes on a 2-core
#   CPU. `width = 64` with more epochs is the paper's model (on a GPU: `device = "cuda"`).
# * **Normalisation** lives inside the model (a `Normalize` layer), so triggers and recovered
#   patches are plain pixel values in [0, 1].
