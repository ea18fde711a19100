"""baeraser_lib: BAERASER (INFOCOM 2022) and its peers as a small, tested library.

    from baeraser_lib import defend, load_model, load_holding
    result = defend(load_model("suspect.safetensors", "resnet18", 10), load_holding("clean/"), 10)

The core (data, models, triggers, train, metrics, attacks, defenses, this API) imports nothing
from `baeraser_lib.lab`, the workbench around it: the notebook runner, the reports site, grids
and sweeps, ablations and widgets. Registries: `ATTACKS`, `DEFENSES`, `DATASETS`, `MODELS`.
"""

from ._version import __version__
from .api import defend, evaluation_split, load_holding, load_model
from .attacks import ATTACKS
from .data import DATASETS
from .defenses import DEFENSES, Defended, recover_triggers, unlearn
from .errors import CheckpointError, ConfigError, DataNotFoundError
from .metrics import der, evaluate
from .models import MODELS

__all__ = ["ATTACKS", "DATASETS", "DEFENSES", "MODELS", "CheckpointError", "ConfigError", "DataNotFoundError",
           "Defended", "__version__", "defend", "der", "evaluate", "evaluation_split", "load_holding", "load_model",
           "recover_triggers", "unlearn"]
