"""The published numbers of Li et al. 2024 (DPAAT), transcribed from the paper's text
(``shared/papers/li2024_dpaat_adversarial_training_classification.txt``), as fractions in [0, 1] (the paper prints
percent in Table I and fractions in Table II).

The paper reports Table I and Table II as averages over CNN groups only ("Three widely used CNNs": ResNet34,
InceptionV3, DenseNet121; "Three commonly used lightweight CNNs": MobileNetV2, ShuffleNetV2, SqueezeNet; "All six
CNNs"); it gives no per-CNN numbers (:data:`TABLE_I_PER_CNN` is therefore all ``None``). The ablation (Sec. IV-D)
is a figure (Fig. 3) whose bars are not in the text: :data:`ABLATION` holds ``None`` and :data:`ABLATION_CLAIMS`
the text's qualitative statements. Table II has no STD rows.
"""

from __future__ import annotations

#: the paper's CNN groups (Sec. IV-B: "three widely used CNNs, i.e., ResNet34, InceptionV3, and DenseNet121, and
#: three commonly used lightweight CNNs, i.e., MobileNetV2, ShufflenetV2, and SqueezeNet"), in our network names
GROUPS: dict[str, tuple[str, ...]] = {
    "widely used": ("resnet34", "inception_v3", "densenet121"),
    "lightweight": ("mobilenet_v2", "shufflenet_v2", "squeezenet"),
    "all six": ("resnet34", "inception_v3", "densenet121", "mobilenet_v2", "shufflenet_v2", "squeezenet"),
}
#: the training methods of Tables I-II, in the paper's row order
METHODS: tuple[str, ...] = ("STD", "AT", "SAT", "AMAT", "DPAAT")
#: Table I's columns: RAcc under each attack, then GAcc (clean test accuracy)
TABLE_I_COLUMNS: tuple[str, ...] = ("FGSM", "10-IFGSM", "20-IFGSM", "20-PGD", "50-PGD", "GAcc")
#: Table II's columns
TABLE_II_COLUMNS: tuple[str, ...] = ("mAP", "mARP", "Precision", "Recall", "F1")


def _row(*values: float) -> dict[str, float]:
    return dict(zip(TABLE_I_COLUMNS, (round(v / 100, 6) for v in values)))


# Table I ("Improvements of Robustness and Generalization"), RAcc (%) under FGSM, 10-IFGSM, 20-IFGSM, 20-PGD, 50-PGD
# and GAcc (%), per group x method; divided by 100 here
TABLE_I: dict[str, dict[str, dict[str, float]]] = {
    "widely used": {
        "STD": _row(59.04, 1.06, 0.04, 12.00, 11.60, 75.81),
        "AT": _row(69.12, 59.84, 53.95, 63.14, 63.14, 70.41),
        "SAT": _row(70.19, 56.32, 45.87, 60.19, 60.19, 71.66),
        "AMAT": _row(69.83, 56.58, 48.55, 61.58, 61.58, 71.45),
        "DPAAT": _row(71.00, 60.82, 54.00, 65.46, 65.46, 71.93),
    },
    "lightweight": {
        "STD": _row(51.27, 3.66, 0.76, 12.56, 12.71, 70.77),
        "AT": _row(66.93, 55.91, 49.18, 61.35, 61.35, 67.83),
        "SAT": _row(66.57, 51.67, 44.76, 58.23, 58.23, 68.72),
        "AMAT": _row(66.73, 54.93, 47.88, 60.42, 60.42, 68.01),
        "DPAAT": _row(68.63, 59.79, 54.84, 63.81, 63.81, 69.48),
    },
    "all six": {
        "STD": _row(55.15, 2.36, 0.41, 12.34, 12.20, 73.96),
        "AT": _row(68.03, 56.56, 51.56, 62.25, 62.25, 69.12),
        "SAT": _row(68.38, 54.00, 44.09, 59.80, 59.80, 70.19),
        "AMAT": _row(68.28, 55.75, 48.22, 61.71, 61.84, 69.73),
        "DPAAT": _row(69.81, 60.31, 54.42, 64.70, 64.70, 70.71),
    },
}

# Table I per CNN: the paper prints group averages only, so there is no published per-CNN number
TABLE_I_PER_CNN: dict[str, dict[str, dict[str, None]]] = {
    cnn: {m: {c: None for c in TABLE_I_COLUMNS} for m in METHODS} for cnn in GROUPS["all six"]
}


def _row2(*values: float) -> dict[str, float]:
    return dict(zip(TABLE_II_COLUMNS, values))


# Table II (Sec. IV-C, "Improvements of mAP and mARP"): mAP, mARP, precision, recall, F1-score per group x method
# (no STD rows in the paper: None)
TABLE_II: dict[str, dict[str, dict[str, float | None]]] = {
    "widely used": {
        "STD": _row2(None, None, None, None, None),
        "AT": _row2(0.6000, 0.6267, 0.7109, 0.7096, 0.7092),
        "SAT": _row2(0.6600, 0.5833, 0.7195, 0.7197, 0.7162),
        "AMAT": _row2(0.5633, 0.4867, 0.7178, 0.7152, 0.7130),
        "DPAAT": _row2(0.8133, 0.7633, 0.7304, 0.7310, 0.7270),
    },
    "lightweight": {
        "STD": _row2(None, None, None, None, None),
        "AT": _row2(0.7500, 0.7267, 0.6911, 0.6890, 0.6891),
        "SAT": _row2(0.8100, 0.7600, 0.7011, 0.7008, 0.7001),
        "AMAT": _row2(0.7167, 0.6733, 0.6958, 0.6902, 0.6900),
        "DPAAT": _row2(0.8500, 0.8333, 0.7082, 0.7080, 0.7049),
    },
    "all six": {
        "STD": _row2(None, None, None, None, None),
        "AT": _row2(0.6750, 0.6150, 0.7010, 0.6993, 0.6992),
        "SAT": _row2(0.7350, 0.6717, 0.7103, 0.7103, 0.7082),
        "AMAT": _row2(0.6400, 0.5800, 0.7068, 0.7027, 0.7015),
        "DPAAT": _row2(0.8317, 0.8150, 0.7193, 0.7195, 0.7160),
    },
}

#: the ablation's variants (Sec. IV-D): D-A without synchronization optimization (dynamic perturbation adaptation
#: only), D-B without the dynamic perturbation adaptation (synchronization only), D-(A+B) = DPAAT
ABLATION_VARIANTS: tuple[str, ...] = ("AT", "D-A", "D-B", "D-(A+B)")
#: the ablation's CNNs (Sec. IV-D: "ResNet34 and MobileNetV2", batch 64, 100 epochs)
ABLATION_CNNS: tuple[str, ...] = ("resnet34", "mobilenet_v2")

# Ablation, Fig. 3 (a bar figure): its GAcc / RAcc values are not in the text extraction, hence None
ABLATION: dict[str, dict[str, dict[str, None]]] = {
    cnn: {v: {"GAcc": None, "RAcc": None} for v in ABLATION_VARIANTS} for cnn in ABLATION_CNNS
}

#: what the text says about Fig. 3 (Sec. IV-D), checked qualitatively by the reproduction
ABLATION_CLAIMS: dict[str, str] = {
    "D-A GAcc > AT GAcc": "the generalization of D-A was higher than that of the AT",
    "D-B GAcc highest": "the generalization of D-B was the highest in the same comparison group",
    "D-B RAcc < D-A RAcc": "the robustness [of D-B] was lower than that of D-A",
    "D-(A+B) RAcc highest": "D-(A+B) could achieve the highest robustness",
    "D-(A+B) GAcc > AT GAcc": "[D-(A+B)] also preserve[s] higher generalization over those using the AT",
}

#: the paper's headline claims (Sec. IV-B/IV-E, abstract), tested by the reproduction
CLAIMS: dict[str, str] = {
    "robustness": "DPAAT gives higher robust accuracy than AT (all six CNNs, 20-PGD: +2.49 points)",
    "generalization": "DPAAT gives higher clean accuracy (GAcc) than AT (all six CNNs: +1.58 points)",
    "interpretability": "DPAAT's Grad-CAM covers the lesion more than STD's and AT's (Fig. 4, qualitative)",
}

#: training settings of Sec. IV-A (for the ``paper`` scale)
TRAINING: dict[str, object] = {
    "classes": ("mel", "bkl", "nv"), "n_train_per_class": 800, "n_test_per_class": 299, "image_size": 224,
    "head_only_epochs": 10, "epochs_after_release": 50, "lr": 0.0003, "batch_size": 32, "optimizer": "Adam",
    "early_stopping_patience": 5, "train_attack": "7-step PGD, L-inf", "sync_weight": 0.5,
    # the budget was lost in extraction; "step size of 0.15" is the paper's wording (unit unclear)
    "epsilon": None, "step_size_text": 0.15,
}

__all__ = ["GROUPS", "METHODS", "TABLE_I_COLUMNS", "TABLE_II_COLUMNS", "TABLE_I", "TABLE_I_PER_CNN", "TABLE_II",
           "ABLATION_VARIANTS", "ABLATION_CNNS", "ABLATION", "ABLATION_CLAIMS", "CLAIMS", "TRAINING"]
