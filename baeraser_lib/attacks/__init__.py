"""Attacks by name, TrojanZoo-style: `ATTACKS[name]` is an `AttackSpec` (see `base`).

    badnets   random-pixel patch, poisoned from scratch             (Gu et al. 2017)
    trojannn  patch optimised to fire chosen neurons, then retrain  (Liu et al. 2018)
    imc       TrojanNN patch re-optimised on the model every epoch  (Pang et al. 2020)
"""

from .badnets import badnets
from .base import AttackResult, AttackSpec
from .imc import IMCOptions, imc
from .trojannn import TrojanNNOptions, check_neurons, trojannn

ATTACKS = {
    "badnets": AttackSpec(badnets, summary="random-pixel patch stamped on poison_rate of the images"),
    "trojannn": AttackSpec(trojannn, TrojanNNOptions, starts_from_clean=True, check=check_neurons, version="1",
                           summary="patch optimised to fire selected neurons, then poison-retrain"),
    "imc": AttackSpec(imc, IMCOptions, starts_from_clean=True, check=check_neurons, version="1",
                      summary="TrojanNN patch co-optimised with the model before every epoch"),
}

__all__ = ["ATTACKS", "AttackResult", "AttackSpec"]
