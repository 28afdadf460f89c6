"""Adversarial training as MONAI ``SupervisedTrainer(iteration_update=...)`` callables.

``STD`` is MONAI's own iteration (``build_iteration("std")`` returns None); ``AT`` (Madry et al.),
``SAT`` (Goodfellow et al.), ``AMAT`` (Ma & Liang) and ``DPAAT`` (Li et al. 2024) wrap
``engine._iteration`` so every MONAI handler, metric, postprocessing step and amp keep working.
"""

from .amat import AMATIteration
from .at import ATIteration, SATIteration
from .base import AdversarialIteration, NonFiniteLossError, PerSampleEpsilonMixin, StandardIteration
from .dpaat import DPAATIteration, dpaat_epsilon_update
from .factory import BUNDLE_METHODS, METHODS, build_iteration, check_method, method_name
from .losses import symmetric_kl
from .utils import AdvKeys, InfererNetwork, resolve_attack

__all__ = [
    "NonFiniteLossError",
    "StandardIteration",
    "AdversarialIteration", "PerSampleEpsilonMixin", "ATIteration", "SATIteration", "AMATIteration",
    "DPAATIteration", "METHODS", "BUNDLE_METHODS", "build_iteration", "check_method", "method_name", "dpaat_epsilon_update",
    "symmetric_kl", "AdvKeys", "InfererNetwork", "resolve_attack",
]
