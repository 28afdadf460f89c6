"""Adversarial attacks for MONAI networks: one loss-agnostic, N-D core (see :mod:`.base`).

``adv = attack(network, images, targets)``. An attack is described by its object: ``PGD(eps=8 / 255, steps=20)`` in
Python, ``{"_target_": "monai_dpaat.attacks.PGD", "eps": "$8/255", "steps": 20}`` in a bundle config;
:func:`build_attack` makes one from a paper's name (``build_attack("pgd", steps=20)``). ``attack.config()`` is its
JSON record, ``attack.with_eps(eps)`` a copy at another budget.
"""

from .base import LARGE_BUDGET_FRACTION, Attack, LargeBudgetWarning, check_budget, default_loss, restore_model_state, with_eps_units
from .fgsm import FGSM
from .iterative import IFGSM, PGD
from .momentum import DIFGSM, MIFGSM, NIFGSM, SIDIFGSM, SINIFGSM, TIFGSM, MomentumIterative
from .noise import GaussianNoise
from .pgd_l2 import PGDL2
from .single_step import FGSMRS, NFGSM
from .free import FreeAT
from .registry import ATTACKS, build_attack, canonical_name, register_attack

register_attack("fgsm", FGSM)
register_attack("i-fgsm", IFGSM, aliases=("ifgsm", "bim"))
register_attack("pgd", PGD, aliases=("pgd-linf",))
register_attack("pgd-l2", PGDL2, aliases=("pgdl2",))
register_attack("mi-fgsm", MIFGSM, aliases=("mifgsm",))
register_attack("ni-fgsm", NIFGSM, aliases=("nifgsm",))
register_attack("ti-fgsm", TIFGSM, aliases=("tifgsm",))
register_attack("di-fgsm", DIFGSM, aliases=("difgsm",))
register_attack("si-di-fgsm", SIDIFGSM, aliases=("sidifgsm",))
register_attack("si-ni-fgsm", SINIFGSM, aliases=("sinifgsm",))
register_attack("gn", GaussianNoise, aliases=("gaussian-noise", "gaussiannoise"))
register_attack("fgsm-rs", FGSMRS, aliases=("fgsmrs", "ffgsm", "fast-fgsm"))
register_attack("n-fgsm", NFGSM, aliases=("nfgsm",))

__all__ = [
    "Attack", "default_loss", "restore_model_state", "FGSM", "IFGSM", "PGD", "PGDL2", "MIFGSM", "NIFGSM",
    "TIFGSM", "DIFGSM", "SIDIFGSM", "SINIFGSM", "MomentumIterative", "GaussianNoise", "ATTACKS",
    "build_attack", "canonical_name", "register_attack", "check_budget", "LargeBudgetWarning", "LARGE_BUDGET_FRACTION",
    "with_eps_units", "FGSMRS", "NFGSM", "FreeAT",
]

# strong evaluation attacks (APGD) and dense segmentation attacks (SegPGD, CosPGD)
from .apgd import APGD, APGDDLR, APGDT, dlr_loss  # noqa: E402
from .cospgd import CosPGD  # noqa: E402
from .segpgd import DenseAttack, SegPGD  # noqa: E402

register_attack("apgd", APGD, aliases=("apgd-ce", "auto-pgd", "autopgd"))
register_attack("apgd-dlr", APGDDLR, aliases=("apgddlr",))
register_attack("apgd-t", APGDT, aliases=("apgdt", "apgd-dlr-t"))
from .square import Square  # noqa: E402

register_attack("square", Square, aliases=("square-attack",))
from .apgd_seg import APGDSeg  # noqa: E402
from .dense_square import DenseSquare  # noqa: E402
from .fmn import FMN  # noqa: E402

register_attack("apgd-seg", APGDSeg, aliases=("apgdseg",))
register_attack("dense-square", DenseSquare, aliases=("square-seg",))
register_attack("fmn", FMN, aliases=("fmn-t", "fast-minimum-norm"))
from .adversary import TRAINING_ADVERSARIES, training_adversary  # noqa: E402

register_attack("segpgd", SegPGD, aliases=("seg-pgd",))
register_attack("cospgd", CosPGD, aliases=("cos-pgd",))
__all__ += ["APGD", "APGDDLR", "APGDT", "APGDSeg", "DenseSquare", "FMN", "Square", "dlr_loss", "CosPGD", "DenseAttack", "SegPGD", "TRAINING_ADVERSARIES",
            "training_adversary"]
