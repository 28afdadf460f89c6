"""monai-dpaat: adversarial attacks, adversarial training (AT, SAT, AMAT, DPAAT) and robustness
evaluation as MONAI components."""

__version__ = "0.1.0"
