"""monai-dpaat: adversarial attacks, adversarial training (AT, SAT, AMAT, DPAAT) and robustness
evaluation as MONAI components."""

__version__ = "0.1.0"

from monai_dpaat import error_hook  # noqa: E402,F401 (stdlib only; bundles call monai_dpaat.error_hook.install())
