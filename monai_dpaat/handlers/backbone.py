"""Head-only warm-up as an ignite handler: train the head alone, release the backbone at a given epoch."""

from __future__ import annotations

import logging

import torch.nn as nn
from ignite.engine import Engine, Events

from monai_dpaat.networks.freeze import freeze_backbone, head_parameters, unfreeze

__all__ = ["ReleaseBackbone"]


class ReleaseBackbone:
    """Freeze all but the classification head when the run starts; release every layer at the start of epoch
    ``release_epoch`` (ignite epochs count from 1).

    With ``release_epoch=11`` epochs 1-10 train the head only and epochs 11+ train everything (the DPAAT
    paper's 10 head-only iterations before releasing all layers). ``release_epoch=1`` never trains the head
    alone. Resuming a run past ``release_epoch`` releases the backbone at the first epoch again.

    The optimizer must be built over **all** parameters (``network.parameters()``), not only the trainable
    ones at construction time: frozen parameters get no gradient and are skipped by torch optimizers, and
    become trained once released. The head is found by :func:`monai_dpaat.networks.head_parameters`.

    Usage (bundle ``train#handlers``)::

        {"_target_": "monai_dpaat.handlers.backbone.ReleaseBackbone", "release_epoch": 11}

    Args:
        release_epoch: first epoch (1-based) that trains all layers.
        network: the classifier; defaults to ``engine.network`` (MONAI ``SupervisedTrainer``).
    """

    def __init__(self, release_epoch: int, network: nn.Module | None = None) -> None:
        if isinstance(release_epoch, bool) or not isinstance(release_epoch, int) or release_epoch < 1:
            raise ValueError(f"release_epoch must be an int >= 1 (ignite epochs start at 1), got {release_epoch!r}")
        if network is not None and not isinstance(network, nn.Module):
            raise ValueError(f"network must be a torch.nn.Module or None, got {type(network).__name__}")
        self.release_epoch = release_epoch
        self.network = network
        self.frozen = False
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Register on ``engine``'s STARTED and EPOCH_STARTED events."""
        if self.network is None:
            network = getattr(engine, "network", None)
            if not isinstance(network, nn.Module):
                raise ValueError(
                    "ReleaseBackbone needs network=... unless the engine has a .network (SupervisedTrainer)"
                )
            self.network = network
        head_parameters(self.network)  # fail at attach time, not mid-run, if the head is unknown
        engine.add_event_handler(Events.STARTED, self.freeze)
        engine.add_event_handler(Events.EPOCH_STARTED, self.maybe_release)

    def freeze(self, engine: Engine) -> None:
        """Freeze the backbone (STARTED)."""
        freeze_backbone(self.network)
        self.frozen = True
        self.logger.info(f"backbone frozen: training the head only until epoch {self.release_epoch}")

    def maybe_release(self, engine: Engine) -> None:
        """Unfreeze everything once ``engine.state.epoch >= release_epoch`` (EPOCH_STARTED)."""
        if self.frozen and engine.state.epoch >= self.release_epoch:
            unfreeze(self.network)
            self.frozen = False
            self.logger.info(f"epoch {engine.state.epoch}: backbone released, training all layers")
