"""Attacks by name, TrojanZoo-style: `ATTACKS[name]` is an `AttackSpec` (see `base`).

    badnets   patch stamped on poisoned images; any size, place (or random places), pattern,
              sparse mask; all-to-one or all-to-all                       (Gu et al. 2017)
    trojannn  patch optimised to fire chosen neurons, then retrain        (Liu et al. 2018)
    imc       TrojanNN patch re-optimised on the model every epoch        (Pang et al. 2020)
    blended   a whole-image pattern blended in                            (Chen et al. 2017)
    wanet     a smooth, nearly invisible warp, with noise mode            (Nguyen & Tran 2021)
    sig       clean-label: a sinusoid on target-class images              (Barni et al. 2019)
"""

from . import badnets as _badnets
from . import blended as _blended
from . import sig as _sig
from . import wanet as _wanet
from .base import AttackResult, AttackSpec
from .imc import IMCOptions, imc
from .trojannn import TrojanNNOptions, check_neurons, trojan_start, trojannn

ATTACKS = {
    "badnets": AttackSpec(_badnets.badnets, _badnets.planted, _badnets.BadNetsOptions, rule=_badnets.target_rule,
                          asr_target=0.97,
                          summary="patch stamped on poison_rate of the images (any size, place, pattern, "
                                  "sparse mask; all-to-one or all-to-all)"),
    "trojannn": AttackSpec(trojannn, trojan_start, TrojanNNOptions, starts_from_clean=True, check=check_neurons,
                           optimised_trigger=True, version="1", asr_target=0.95,
                           summary="patch optimised to fire selected neurons, then poison-retrain"),
    "imc": AttackSpec(imc, trojan_start, IMCOptions, starts_from_clean=True, check=check_neurons,
                      optimised_trigger=True, version="1", asr_target=0.95,
                      summary="TrojanNN patch co-optimised with the model before every epoch"),
    "blended": AttackSpec(_blended.blended, _blended.planted, _blended.BlendedOptions, check_info=_blended.check_info,
                          patch=False, version="1", summary="whole-image pattern blended in at ratio alpha"),
    "wanet": AttackSpec(_wanet.wanet, _wanet.planted, _wanet.WaNetOptions, check_info=_wanet.check_info,
                        patch=False, default_poison_rate=0.1, version="1",
                        summary="smooth warp of the whole image, with the paper's noise mode"),
    "sig": AttackSpec(_sig.sig, _sig.planted, _sig.SIGOptions, check_data=_sig.check_data, patch=False,
                      version="1", summary="clean-label: a sinusoid added to target-class images, labels kept"),
}

__all__ = ["ATTACKS", "AttackResult", "AttackSpec"]
