"""TrojanNN (Liu et al., NDSS 2018): a trigger built to excite the model's own neurons.

Start from a trained (clean) model. Pick the few neurons of one layer with the strongest
weights, optimise the trigger's pixels (inside its s×s mask) so that stamped images drive those
neurons to a high target activation, then retrain the model on data poisoned with that trigger.
The backdoor rides on a feature the model already has, so it needs less poison to take hold.

`layer` names a module of the model: for an `nn.Linear` (default `linear`, the classifier) the
neurons are its *inputs*, ranked by Σ|W| of their outgoing weights; for an `nn.Conv2d` they are
its output channels, ranked by Σ|W| of their incoming weights; a channel's activation is its
mean over the *footprint*, the output positions the patch's place moves most (over the whole map
a 3×3 patch would barely move it). Only the quarter of neurons the patch moves most is eligible:
our addition, since a small patch cannot move most neurons of a pooled layer.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..checks import rules, validate
from ..data import DatasetInfo, as_tensors
from ..errors import ConfigError
from ..train import TrainConfig, fit, pick_device, progress_kwargs
from ..triggers import Trigger, stamp
from .badnets import make_trigger, poison
from .base import AttackResult, AttackSettings



@dataclass(frozen=True)
class TrojanNNOptions:
    """TrojanNN's own knobs (notebook parameter `attack_options`, a dict of these names)."""

    neurons: int = 2  # how many neurons the trigger must excite
    layer: str = "linear"  # module name: Linear → its inputs; Conv2d → its output channels
    target_activation: float = 10.0  # the value the neurons are pushed to (MSE target)
    steps: int = 300  # Adam steps of the trigger optimisation
    lr: float = 0.1  # Adam's learning rate on the trigger's logits
    batch: int = 256  # training images the trigger is optimised on

    RULES: ClassVar = rules(neurons="[1, 100000]", target_activation="(0, 1e6]", steps="[1, 1000000]",
                            lr="(0, 1000]", batch="[1, 65536]")

    def __post_init__(self):
        validate(self)
        if not isinstance(self.layer, str) or not self.layer:
            raise ConfigError(f"layer must be a module name such as 'linear', got {self.layer!r}")


def neuron_layer(model: nn.Module, layer: str) -> nn.Module:
    """The `nn.Linear` or `nn.Conv2d` called `layer` in `model`, or a ConfigError naming the choices."""
    modules = dict(model.named_modules())
    candidates = [n for n, m in modules.items() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if layer not in modules:
        shown = ", ".join(candidates[:6] + (["..."] if len(candidates) > 6 else []) + candidates[-2:])
        raise ConfigError(f"the model has no layer {layer!r}; Linear/Conv2d layers are: {shown}")
    module = modules[layer]
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        raise ConfigError(f"layer {layer!r} is a {type(module).__name__}; TrojanNN needs an nn.Linear "
                          "(its inputs are the neurons) or an nn.Conv2d (its output channels)")
    return module


def layer_width(module: nn.Module) -> int:
    """How many neurons the layer offers."""
    return module.in_features if isinstance(module, nn.Linear) else module.out_channels


def check_neurons(model: nn.Module, options: TrojanNNOptions) -> None:
    """ConfigError unless `model` has the layer and at least `neurons` neurons in it."""
    width = layer_width(neuron_layer(model, options.layer))
    if options.neurons > width:
        raise ConfigError(f"{options.neurons} neurons requested but layer {options.layer!r} has only {width}")


def select_neurons(model: nn.Module, layer: str, k: int, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of the `k` neurons of `layer` with the largest Σ|W| (see the module docstring),
    among the `allowed` ones (a boolean mask) if given."""
    module = neuron_layer(model, layer)
    w = module.weight.detach().abs()
    scores = (w.sum(0) if isinstance(module, nn.Linear) else w.sum((1, 2, 3))).cpu()
    if allowed is not None:
        if int(allowed.sum()) < k:
            raise ConfigError(f"only {int(allowed.sum())} neurons of layer {layer!r} respond enough to the "
                              f"trigger's place; {k} requested: ask for fewer, or pick a wider layer")
        scores = scores.masked_fill(~allowed.cpu(), float("-inf"))
    return scores.topk(k).indices.sort().values


def patch_reach(model: nn.Module, layer: str, x: torch.Tensor, trigger: Trigger
                ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(footprint, eligible): for a Conv2d layer the (H', W') mask of output positions the patch's
    place moves most (None for a Linear), and the boolean mask of the neurons the patch can move
    most (the top quarter by mean |change| between an all-0 and an all-1 patch). A neuron the
    patch barely reaches is useless to TrojanNN, whatever its weights."""
    module = neuron_layer(model, layer)
    outs = []

    def hook(_, inputs, output):
        outs.append(inputs[0].flatten(1) if isinstance(module, nn.Linear) else output)

    handle = module.register_forward_hook(hook)
    try:
        model.eval()
        with torch.no_grad():
            for value in (0.0, 1.0):
                model(stamp(x, torch.full_like(trigger.pattern, value), trigger.position))
    finally:
        handle.remove()
    change = (outs[0] - outs[1]).abs().mean(0)  # (width,) or (channels, H', W')
    footprint = None
    if not isinstance(module, nn.Linear):
        where = change.mean(0)
        footprint = where >= 0.5 * where.max()  # deep layers see everything a little: keep the core
        change = change[:, footprint].mean(-1)
    eligible = (change > 1e-6) & (change >= change.quantile(0.75))
    return (None if footprint is None else footprint.cpu()), eligible.cpu()


@contextmanager
def recording(model: nn.Module, layer: str, footprint: torch.Tensor | None = None):
    """Within the block, `box[0]` holds the last (N, width) activation of `layer`'s neurons: a
    Linear's inputs, or a Conv2d's channels averaged over `footprint` (all positions if None)."""
    module, box = neuron_layer(model, layer), []

    def hook(_, inputs, output):
        if isinstance(module, nn.Linear):
            act = inputs[0].flatten(1)
        elif footprint is None:
            act = output.mean((2, 3))
        else:
            mask = footprint.to(output.device, output.dtype)
            act = (output * mask).sum((2, 3)) / mask.sum()
        box[:] = [act]

    handle = module.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def neuron_activation(model: nn.Module, layer: str, neurons: torch.Tensor, x: torch.Tensor,
                      footprint: torch.Tensor | None = None) -> torch.Tensor:
    """(N, k) activations of the chosen `neurons` on images `x` (the model in eval mode)."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), recording(model, layer, footprint) as box:
        model(x)
    model.train(was_training)
    return box[0][:, neurons.to(box[0].device)]


def sample_images(train_set: Dataset, n: int, seed: int, exclude_label: int | None = None) -> torch.Tensor:
    """A seeded sample of up to `n` training images (optionally without one label)."""
    x, y = as_tensors(train_set)
    if exclude_label is not None:
        x = x[y != exclude_label]
    g = torch.Generator().manual_seed(seed)
    return x[torch.randperm(len(x), generator=g)[:n]]


def to_logits(pattern: torch.Tensor) -> torch.Tensor:
    """The unconstrained parametrisation: pattern = sigmoid(logits) stays in [0, 1]."""
    p = pattern.detach().clamp(1e-3, 1 - 1e-3)
    return torch.log(p / (1 - p)).requires_grad_(True)


def optimise_for_neurons(model: nn.Module, start: Trigger, x: torch.Tensor, layer: str, neurons: torch.Tensor,
                         options: TrojanNNOptions, device: torch.device, progress: bool = True,
                         footprint: torch.Tensor | None = None) -> tuple[Trigger, dict]:
    """Adam on the trigger's logits: MSE of the neurons' activation on stamped `x` to the target."""
    model = model.to(device).eval()
    x = x.to(device)
    idx = neurons.to(device)
    logits = to_logits(start.pattern.to(device))
    opt = torch.optim.Adam([logits], lr=options.lr)
    losses = []
    with recording(model, layer, footprint) as box:
        for _ in tqdm(range(options.steps), desc="trojannn trigger", leave=False, **progress_kwargs(progress)):
            model(stamp(x, torch.sigmoid(logits), start.position))
            act = box[0][:, idx]
            loss = ((act - options.target_activation) ** 2).mean()
            (grad,) = torch.autograd.grad(loss, [logits])
            opt.zero_grad(set_to_none=True)
            logits.grad = grad
            opt.step()
            losses.append(loss.item())
    trigger = Trigger(torch.sigmoid(logits).detach().cpu(), start.position)
    details = {
        "neurons": neurons.tolist(),
        "layer": layer,
        "activation_start": neuron_activation(model, layer, neurons, start.apply(x), footprint).mean(0).tolist(),
        "activation_end": neuron_activation(model, layer, neurons, trigger.apply(x), footprint).mean(0).tolist(),
        "activation_clean": neuron_activation(model, layer, neurons, x, footprint).mean(0).tolist(),
        "neuron_loss": losses[:: max(1, len(losses) // 100)],
    }
    return trigger, details


def trojan_start(cfg: AttackSettings, info: DatasetInfo) -> Trigger:
    """The seeded random patch TrojanNN (and IMC) start from."""
    return make_trigger(cfg, info)


def trojan_trigger(model: nn.Module, train_set: Dataset, info: DatasetInfo, attack: AttackSettings,
                   options: TrojanNNOptions, device: torch.device, progress: bool = True) -> tuple[Trigger, dict]:
    """TrojanNN's trigger for `model`: from the seeded random patch to the neuron-exciting one.
    Neurons are chosen by weight among those the patch's place moves most."""
    check_neurons(model, options)
    start = trojan_start(attack, info)
    x = sample_images(train_set, options.batch, attack.seed + 2)
    model = model.to(device).eval()
    footprint, allowed = patch_reach(model, options.layer, x.to(device), start)
    neurons = select_neurons(model, options.layer, options.neurons, allowed)
    trigger, details = optimise_for_neurons(model, start, x, options.layer, neurons, options, device, progress,
                                            footprint)
    details["initial_trigger"] = start.to_json()
    return trigger, details


def trojannn(model: nn.Module, train_set: Dataset, info: DatasetInfo, attack: AttackSettings,
             train: TrainConfig, device=None, epoch_end=None, progress: bool = True,
             precision: str = "auto", layout: str = "auto") -> AttackResult:
    """Optimise the TrojanNN trigger on `model` (the clean model's weights), then poison-retrain it."""
    options = attack.resolved_options()
    device = device or pick_device()
    trigger, details = trojan_trigger(model, train_set, info, attack, options, device, progress)
    poisoned, idx = poison(train_set, trigger, attack)
    log = (lambda m, epoch: epoch_end(m, epoch, trigger)) if epoch_end is not None else None
    history = fit(model, poisoned, train, device, epoch_end=log, progress=progress, desc="trojannn",
                  precision=precision, layout=layout)
    return AttackResult(trigger=trigger, history=history, poisoned_indices=idx, details=details)
