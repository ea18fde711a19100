"""Ablation building blocks: nested holding sets over one evaluation set, grids, defenses by name,
moved triggers, the unlearning switches the sweeps use, and the cached bench."""

import dataclasses

import pytest
import torch
from torch.utils.data import TensorDataset

from baeraser_lib.lab.ablations import (AblationBench, DefenseSuite, check_positions, grid_values, moved,
                                    position_figures, run_defenses, unlearn_or_keep)
from baeraser_lib.lab.claims import verdict, verdict_lines
from baeraser_lib.config import AttackConfig, TrainConfig
from baeraser_lib.data import ExperimentData, holding_sweep, load_experiment_data
from baeraser_lib.defenses.common import triggered_copy
from baeraser_lib.defenses.pool import TriggerPool
from baeraser_lib.defenses.recovery import RecoveryConfig
from baeraser_lib.defenses.unlearning import UnlearnConfig, unlearn
from baeraser_lib.errors import ConfigError
from baeraser_lib.models import build_model
from baeraser_lib.triggers import Trigger


def indices(subset):
    return set(subset.indices)


def test_holding_sweep_is_nested_and_never_overlaps_one_fixed_evaluation_set(fashion_root):
    data = load_experiment_data("fashion_mnist", fashion_root, holding_ratio=0.1, seed=3)
    holdings, evaluation = holding_sweep(data, [0.05, 0.1, 0.2, 0.25])
    sizes = [len(holdings[r]) for r in (0.05, 0.1, 0.2, 0.25)]
    assert sizes == [20, 40, 80, 100]  # ratio × 400 training images
    assert indices(holdings[0.05]) < indices(holdings[0.1]) < indices(holdings[0.2]) < indices(holdings[0.25])
    assert indices(holdings[0.1]) == indices(data.holding)  # the data's own D_h: cached pools stay valid
    assert not indices(evaluation) & indices(holdings[0.25])
    assert len(evaluation) == 200 - 100
    # the evaluation set depends on the largest ratio only
    _, again = holding_sweep(data, [0.25, 0.01])
    assert indices(again) == indices(evaluation)


def test_holding_sweep_needs_the_test_split_and_a_ratio(fashion_root):
    data = load_experiment_data("fashion_mnist", fashion_root)
    with pytest.raises(ConfigError, match="at least one"):
        holding_sweep(data, [])
    with pytest.raises(ConfigError, match="test split"):
        holding_sweep(ExperimentData(data.info, data.train, data.holding, data.evaluation), [0.1])
    with pytest.raises(ConfigError, match="holding_ratio"):
        holding_sweep(data, [0.1, 1.5])


def test_grid_values_and_overrides():
    full = grid_values("full")
    assert full["beta_ratios"][0] == 1e-4 and full["beta_ratios"][-1] == 100.0
    assert full["holding_ratios"] == [0.01, 0.02, 0.05, 0.1] and full["trigger_sizes"] == [3, 5, 7]
    assert grid_values("reduced", trigger_sizes=[3, 9])["trigger_sizes"] == [3, 9]
    assert grid_values("reduced", beta_ratios=None)["beta_ratios"] == grid_values("reduced")["beta_ratios"]
    with pytest.raises(ConfigError, match="unknown grid"):
        grid_values("huge")
    with pytest.raises(ConfigError, match="unknown sweep"):
        grid_values("full", seeds=[1, 2])
    with pytest.raises(ConfigError, match="at least two"):
        grid_values("full", holding_ratios=[0.05])
    with pytest.raises(ConfigError, match="list"):
        grid_values("full", beta_ratios=1.0)
    with pytest.raises(ConfigError, match="positive"):
        grid_values("full", beta_ratios=[1.0, -1.0])
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        grid_values("full", holding_ratios=[0.05, 1.5])
    with pytest.raises(ConfigError, match="integers"):
        grid_values("full", trigger_sizes=[3, 4.5])
    with pytest.raises(ConfigError, match="λ_H"):
        grid_values("full", lambda_h_values=[0.1, -1.0])


def test_positions_are_checked_before_compute():
    shape = (1, 28, 28)
    assert check_positions(["center", [0, 0], "random"], 5, shape) == ["center", (0, 0), "random"]
    with pytest.raises(ConfigError, match="unknown trigger position"):
        check_positions(["middle"], 3, shape)
    with pytest.raises(ConfigError, match="leaves"):
        check_positions([[26, 26]], 3, shape)
    with pytest.raises(ConfigError, match="larger than"):
        check_positions(["center"], 30, shape)
    with pytest.raises(ConfigError, match="at least one"):
        check_positions([], 3, shape)


def test_moved_trigger_keeps_the_pattern_and_lands_elsewhere():
    t = Trigger(torch.ones(1, 3, 3), "bottom_right")
    x = torch.zeros(1, 1, 8, 8)
    out = moved(t, "top_left").apply(x)
    assert out[0, 0, :3, :3].eq(1).all() and out[0, 0, -3:, -3:].eq(0).all()


def test_position_figures_score_each_position():
    class Corner(torch.nn.Module):
        """Predicts class 0 iff the top-left pixel is bright, else class 1."""

        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            hit = (x[:, 0, 0, 0] > 0.5).float()
            return torch.stack([hit, 1 - hit], 1)

    data = TensorDataset(torch.zeros(6, 1, 8, 8), torch.ones(6, dtype=torch.long))
    figs = position_figures(Corner(), data, Trigger(torch.ones(1, 2, 2), "bottom_right"), 0,
                            ["top_left", "bottom_right", (3, 3)])
    assert figs == {"top_left": 1.0, "bottom_right": 0.0, "3,3": 0.0}


def test_verdict_is_a_plain_record():
    v = verdict("claim", 1 < 2, "evidence")
    assert v == {"claim": "claim", "reproduced": True, "evidence": "evidence"} and type(v["reproduced"]) is bool
    text = verdict_lines([v, verdict("other", False, "numbers")])
    pad = " " * 15
    assert text.splitlines() == ["reproduced     claim", pad + "evidence", "NOT reproduced other", pad + "numbers"]


def test_unlearning_switches_are_validated():
    with pytest.raises(ConfigError, match="select"):
        UnlearnConfig(select="best")
    with pytest.raises(ConfigError, match="target"):
        UnlearnConfig(target="wrong")


def fixed_pool(label: int, size: int = 3, shape=(1, 12, 12)) -> TriggerPool:
    """A pool of one freshly initialised generator for `label`, stamping at the bottom-right corner."""
    from baeraser_lib.defenses import networks as N

    cfg = RecoveryConfig(form="patch", patch_size=size, noise_dim=8, noise_chunks=4, hidden=8)
    gens = N.init_generators([torch.Generator().manual_seed(0)], cfg.noise_dim, cfg.noise_chunks, cfg.hidden,
                             shape[0] * size * size)
    return TriggerPool([label], [(shape[1] - size, shape[2] - size)], gens, cfg, shape)


def test_triggered_copy_can_keep_the_correct_labels():
    pool = fixed_pool(0)
    x = torch.zeros(6, 1, 12, 12)
    y = torch.tensor([0, 1, 2, 0, 3, 4])
    xt, lt = triggered_copy(pool, x, y, torch.Generator().manual_seed(1))
    xc, lc = triggered_copy(pool, x, y, torch.Generator().manual_seed(1), correct_labels=True)
    assert lt.tolist() == [0, 0, 0, 0] and lc.tolist() == [1, 2, 3, 4]  # label-0 images left out in both
    assert torch.equal(xt, xc)


def small_setup():
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, 1, 4, (0.5,), (0.5,))
    x = torch.rand(40, 1, 12, 12)
    y = torch.arange(40) % 10
    return model.eval(), TensorDataset(x, y)


def test_select_last_runs_every_epoch_and_returns_the_last():
    model, holding = small_setup()
    pool = fixed_pool(0)
    # stop_asr = 1 makes the default rule stop after the first epoch; "last" must ignore it
    stop = UnlearnConfig(epochs=3, batch_size=16, stop_asr=1.0, acc_tolerance=1.0, early_stop=True)
    _, h_stop = unlearn(model, holding, pool, stop, progress=False)
    last, h_last = unlearn(model, holding, pool, dataclasses.replace(stop, select="last"), progress=False)
    assert [r["epoch"] for r in h_stop] == [0, 1]
    assert [r["epoch"] for r in h_last] == [0, 1, 2, 3] and h_last[-1]["chosen"]
    assert sum(r["chosen"] for r in h_last) == 1
    # the returned model is the third epoch's: the same run stopped by its epoch budget gives it too
    third, _ = unlearn(model, holding, pool, dataclasses.replace(stop, select="last"), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(last.state_dict().values(), third.state_dict().values()))
    two, _ = unlearn(model, holding, pool, dataclasses.replace(stop, select="last", epochs=2), progress=False)
    assert not all(torch.equal(a, b) for a, b in zip(last.state_dict().values(), two.state_dict().values()))


def test_correct_label_target_changes_what_is_unlearned():
    model, holding = small_setup()
    pool = fixed_pool(0)
    cfg = UnlearnConfig(epochs=1, batch_size=16, select="last")
    _, h_pool = unlearn(model, holding, pool, cfg, progress=False)
    _, h_correct = unlearn(model, holding, pool, dataclasses.replace(cfg, target="correct"), progress=False)
    assert h_pool[1]["unlearn_loss"] != h_correct[1]["unlearn_loss"]


def test_empty_pool_leaves_the_model_unchanged_and_runs_the_callback():
    model, holding = small_setup()
    empty = TriggerPool([], [], {}, RecoveryConfig(), (1, 12, 12))
    out, history = unlearn_or_keep(model, holding, empty, UnlearnConfig(), on_epoch=lambda m, e: {"seen": e})
    assert history[0]["empty_pool"] and history[0]["seen"] == 0
    assert out is not model and all(torch.equal(a, b) for a, b in zip(out.state_dict().values(),
                                                                       model.state_dict().values()))
    with pytest.raises(ConfigError, match="unknown defense"):
        run_defenses(model, holding, empty, DefenseSuite(), ["pruning"])
    repaired = run_defenses(model, holding, empty, DefenseSuite(), ["baeraser"])
    assert repaired["baeraser"].model is not model


def test_bench_reuses_cached_victims_and_pools(fashion_root, tmp_path):
    data = load_experiment_data("fashion_mnist", fashion_root, holding_ratio=0.25)
    train = TrainConfig(model="small_cnn", width=4, epochs=2, batch_size=32, lr=0.05)
    bench = AblationBench(data, train, AttackConfig(poison_rate=0.2), RecoveryConfig(steps_per_stage=4, mask_steps=8),
                          tmp_path, [0.2, 0.25], 0.3, progress=False)
    assert sorted(bench.holdings) == [0.2, 0.25] and len(bench.evaluation) == 200 - 120
    v = bench.victim()
    assert bench.victim(trigger_size=3) is v  # memoised
    v5 = bench.victim(trigger_size=5)
    assert v5.trigger.size == 5 and v5.path != v.path
    pool, meta = bench.pool(v5, 0.2)
    assert pool.config == bench.recovery and meta["holding"]["n"] == 80  # no size told: the same config for all
    assert bench.pool(v5, 0.2)[0] is pool
    other, _ = bench.pool(v5, 0.2, RecoveryConfig(steps_per_stage=4, mask_steps=8, lambda_h=0.0))
    assert other is not pool and other.config.lambda_h == 0.0 and other.config.form == "mask"
    with pytest.raises(ConfigError, match="not in this bench"):
        bench.pool(v5, 0.5)
    with pytest.raises(ConfigError, match="unknown attack"):
        bench.victim("nonsense")
    # a new bench over the same artifacts loads instead of training
    again = AblationBench(data, train, AttackConfig(poison_rate=0.2), RecoveryConfig(steps_per_stage=4, mask_steps=8),
                          tmp_path, [0.2, 0.25], 0.3, progress=False)
    assert again.victim(trigger_size=5).cached
    figs = bench.score(v.model, v)
    assert set(figs) == {"clean_acc", "asr", "robust_acc"}
    assert bench.before(v) == figs and bench.before(v) is bench.before(v)  # measured once per victim


def test_the_bench_says_when_it_must_train_an_uncached_victim(fashion_root, tmp_path, monkeypatch, capsys):
    """The panel's set-up trains for minutes when nothing is cached: it says so first."""
    import baeraser_lib.lab.ablations as AB

    data = load_experiment_data("fashion_mnist", fashion_root, holding_ratio=0.25)
    train = TrainConfig(model="small_cnn", width=4, epochs=1, batch_size=64)
    monkeypatch.setattr(AB, "obtain_model", lambda *a, **k: "trained")
    bench = AblationBench(data, train, AttackConfig(), RecoveryConfig(), tmp_path, [0.25])
    assert bench.victim() == "trained"
    said = capsys.readouterr().out
    assert "is not cached" in said and "training it now (1 epochs" in said
