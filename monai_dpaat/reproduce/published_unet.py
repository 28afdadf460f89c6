"""The published numbers of Koishiyeva et al. 2025, "Resilience of UNet-Based Models Under Adversarial Conditions in
Medical Image Segmentation" (Eng. Proc. 104, 3), transcribed from ``shared/papers/koishiyeva2025_*.txt``.

The text has four tables, in this order, with their captions lost in extraction; each is keyed here by the paper's
model names (``UNet``, ``Att-UNet++``):

1. :data:`CLEAN` -- clean Dice, mean IoU and (pixel) accuracy.
2. :data:`ATTACK_DICE` -- Dice under each attack (row ``Original image`` = clean).
3. :data:`ATTACK_IOU` -- IoU under each attack.
4. :data:`ATTACK_LOSS` -- loss under each attack.

Which of tables 2 and 3 is Dice and which is IoU is inferred, not read: in table 3 every number is below its
counterpart in table 2, as a mean IoU must be below the mean Dice of the same predictions (IoU = D / (2 - D) <= D per
image), and IoU(0.8118) = 0.683 is table 3's 0.6845. (The issue quoted table 3's GN row, 0.2329 / 0.0658, as Dice.)
Note also that table 2's clean row (0.8118 / 0.7603) disagrees with table 1's clean Dice (0.6424 / 0.7160), and
reverses which model is better: the paper does not say on what images each was measured. Every number was readable.
"""

from __future__ import annotations

#: the models, in the paper's column order
MODELS = ("UNet", "Att-UNet++")
#: the attacks, in the paper's row order (the labels of the ``unet-paper`` preset)
ATTACKS = ("FGSM", "PGD", "MI-FGSM", "TI-FGSM", "DI-FGSM", "SI-DI-FGSM", "NI-FGSM", "GN")
#: the metrics of table 1, in its row order
CLEAN_METRICS = ("Dice", "Mean IoU", "Accuracy")

# Table 1 (first table of the text): clean metrics per model
CLEAN: dict[str, dict[str, float | None]] = {
    "UNet": {"Dice": 0.6424, "Mean IoU": 0.4732, "Accuracy": 0.9009},
    "Att-UNet++": {"Dice": 0.7160, "Mean IoU": 0.6190, "Accuracy": 0.9292},
}

# Table 2 (second table): Dice per attack ("Original image" = clean inputs)
ATTACK_DICE: dict[str, dict[str, float | None]] = {
    "UNet": {"Original": 0.8118, "FGSM": 0.6607, "PGD": 0.3185, "MI-FGSM": 0.3185, "TI-FGSM": 0.3350,
             "DI-FGSM": 0.2884, "SI-DI-FGSM": 0.3667, "NI-FGSM": 0.3859, "GN": 0.3284},
    "Att-UNet++": {"Original": 0.7603, "FGSM": 0.5717, "PGD": 0.2553, "MI-FGSM": 0.3217, "TI-FGSM": 0.2882,
                   "DI-FGSM": 0.3088, "SI-DI-FGSM": 0.3208, "NI-FGSM": 0.2212, "GN": 0.1463},
}

# Table 3 (third table): IoU per attack
ATTACK_IOU: dict[str, dict[str, float | None]] = {
    "UNet": {"Original": 0.6845, "FGSM": 0.4899, "PGD": 0.1893, "MI-FGSM": 0.2441, "TI-FGSM": 0.2003,
             "DI-FGSM": 0.1674, "SI-DI-FGSM": 0.2246, "NI-FGSM": 0.1968, "GN": 0.2329},
    "Att-UNet++": {"Original": 0.6550, "FGSM": 0.4153, "PGD": 0.1428, "MI-FGSM": 0.1896, "TI-FGSM": 0.1690,
                   "DI-FGSM": 0.1788, "SI-DI-FGSM": 0.1899, "NI-FGSM": 0.1215, "GN": 0.0658},
}

# Table 4 (fourth table): loss per attack (the paper does not name the loss function)
ATTACK_LOSS: dict[str, dict[str, float | None]] = {
    "UNet": {"Original": 0.3408, "FGSM": 1.0201, "PGD": 3.7275, "MI-FGSM": 2.5136, "TI-FGSM": 3.4177,
             "DI-FGSM": 3.4365, "SI-DI-FGSM": 3.1738, "NI-FGSM": 4.0243, "GN": 2.0101},
    "Att-UNet++": {"Original": 0.2127, "FGSM": 0.6375, "PGD": 2.3940, "MI-FGSM": 1.4659, "TI-FGSM": 2.0134,
                   "DI-FGSM": 1.9829, "SI-DI-FGSM": 1.9152, "NI-FGSM": 2.6552, "GN": 1.5234},
}

#: the attack tables by the metric key of :class:`~monai_dpaat.evaluation.RobustnessResult` rows
ATTACK_TABLES: dict[str, dict[str, dict[str, float | None]]] = {"dice": ATTACK_DICE, "iou": ATTACK_IOU,
                                                                 "loss": ATTACK_LOSS}
