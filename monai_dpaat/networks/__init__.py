"""Networks: Residual-Attention UNet++ for segmentation, the DPAAT paper's classifiers, and head-only warm-up."""

from .attention_unetpp import AttentionGate, AttentionUNetPlusPlus, NestedNode, match_spatial_size
from .classifiers import CLASSIFIER_NAMES, InceptionV3Classifier, SmallCNN, build_classifier, pretrained_weights_path
from .freeze import freeze_backbone, head_module, head_parameters, unfreeze
from .inferer_network import InfererNetwork

__all__ = [
    "AttentionUNetPlusPlus", "AttentionGate", "NestedNode", "match_spatial_size",
    "build_classifier", "CLASSIFIER_NAMES", "SmallCNN", "InceptionV3Classifier", "pretrained_weights_path",
    "head_module", "head_parameters", "freeze_backbone", "unfreeze", "InfererNetwork",
]
