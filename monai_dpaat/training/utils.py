"""Helpers shared by the adversarial training iterations: attack resolution, the engine's batch unpacking,
sample ids, the network the attack differentiates and the ``torch.distributed`` reductions (the rules shared
with attacks and evaluation, such as per-sample losses, live in :mod:`monai_dpaat.conventions`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist

from monai.inferers import SimpleInferer
from monai.utils import evenly_divisible_all_gather
from monai.utils.dist import get_dist_device

from monai_dpaat.attacks import PGD, Attack
from monai_dpaat.conventions import plain_tensor
from monai_dpaat.networks.inferer_network import InfererNetwork

__all__ = [
    "AdvKeys",
    "resolve_attack",
    "unpack_batch",
    "batch_indices",
    "InfererNetwork",
    "distributed_ready",
    "all_reduce_sum",
    "all_gather_cat",
]


class AdvKeys:
    """Names of the per-iteration numbers an adversarial iteration writes into ``engine.state.output``
    (copied into every decollated item, like ``loss``) and ``engine.state.adversarial`` (python floats)."""

    LOSS_CLEAN = "loss_clean"
    LOSS_ADV = "loss_adv"
    LOSS_SYNC = "loss_sync"
    EPS_MEAN = "eps_mean"
    EPS_MIN = "eps_min"
    EPS_MAX = "eps_max"
    FRAGILE = "fragile_fraction"
    CRITERION = "loss_change_mean"
    SUCCESS = "attack_success"


def default_training_attack() -> Attack:
    """The training adversary: 7-step L-inf PGD as in the DPAAT paper, with random start, eps 8/255 and alpha 2/255
    (ours, Madry et al.'s CIFAR setting: the paper's eps was lost in extraction and its "step size of 0.15" is read
    in docs/paper_choices.md)."""
    return PGD(eps=8 / 255, alpha=2 / 255, steps=7, random_start=True)


def resolve_attack(attack: Attack | Callable | None) -> Callable:
    """The training adversary: ``attack`` itself (an :class:`~monai_dpaat.attacks.Attack`, or any callable
    ``(network, images, targets, eps=None, alpha=None) -> adversarial images``), or for ``None`` the default
    7-step PGD (:func:`default_training_attack`).

    Raises:
        ValueError: for a name or a dict: pass an Attack (``build_attack("pgd", steps=7)``, ``PGD(steps=7)``) or,
            in a bundle config, a ``{"_target_": "monai_dpaat.attacks.PGD", ...}`` object.
    """
    if attack is None:
        return default_training_attack()
    if isinstance(attack, (str, Mapping)):
        raise ValueError(
            f"attack must be an Attack (e.g. build_attack('pgd', steps=7) or PGD(steps=7); in a bundle config "
            f"{{'_target_': 'monai_dpaat.attacks.PGD', 'steps': 7}}), a callable or None; got {attack!r}"
        )
    if callable(attack):
        return attack
    raise ValueError(f"attack must be an Attack, a callable or None; got {type(attack).__name__}")


def unpack_batch(engine: Any, batchdata: Any) -> tuple[torch.Tensor, Any, tuple, dict]:
    """Run the engine's ``prepare_batch`` (as ``SupervisedTrainer._iteration`` does) and return
    ``(inputs, targets, args, kwargs)``; MetaTensors become plain tensors for the attack."""
    if batchdata is None:
        raise ValueError("Must provide batch data for current iteration.")
    batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
    if len(batch) == 2:
        inputs, targets = batch
        args, kwargs = (), {}
    else:
        inputs, targets, args, kwargs = batch
    return plain_tensor(inputs), plain_tensor(targets), tuple(args or ()), dict(kwargs or {})


def batch_indices(batchdata: Any, key: str, num_samples: int, batch_size: int) -> torch.Tensor:
    """The sample ids of a batch as a CPU ``(N,)`` long tensor, validated against the table size.

    Raises:
        ValueError: the batch is not a dict or lacks ``key``; the ids are not integers, not one per
            sample, negative or ``>= num_samples``.
    """
    if not isinstance(batchdata, Mapping) or key not in batchdata:
        found = sorted(batchdata) if isinstance(batchdata, Mapping) else type(batchdata).__name__
        raise ValueError(
            f"the batch has no sample-id key {key!r} (found {found}); per-sample epsilon methods need every "
            f"item to carry its position in the training list, e.g. {{'image': ..., 'label': ..., '{key}': i}}"
        )
    idx = torch.as_tensor(batchdata[key])
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise ValueError(f"batch[{key!r}] must hold integer sample ids, got dtype {idx.dtype}")
    idx = idx.reshape(-1).long().cpu()
    if idx.numel() != batch_size:
        raise ValueError(f"batch[{key!r}] has {idx.numel()} ids for a batch of {batch_size} samples")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_samples):
        raise ValueError(
            f"batch[{key!r}] has ids outside [0, {num_samples}) (num_samples={num_samples}): "
            f"min {int(idx.min())}, max {int(idx.max())}"
        )
    return idx


def unwrap_parallel(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel``/``DataParallel``: the attack's input-gradient passes
    must not go through DDP's reducer (they never produce parameter gradients to synchronise)."""
    parallel = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    return network.module if isinstance(network, parallel) else network


def attack_network(engine: Any, args: tuple, kwargs: dict) -> torch.nn.Module:
    """The network the attack differentiates: ``engine.network`` (unwrapped from DDP) when the inferer is a
    plain forward, else an :class:`InfererNetwork` around it."""
    network = unwrap_parallel(engine.network)
    if type(engine.inferer) is SimpleInferer and not args and not kwargs:
        return network
    return InfererNetwork(network, engine.inferer, args=args, kwargs=kwargs)


def distributed_ready() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def wait_for_all_ranks(*_: Any) -> None:
    """``dist.barrier()`` under an initialised multi-process group, else nothing; an ignite handler (any
    arguments ignored). Attached to a trainer's ``COMPLETED`` so that no rank reaches the bundle's ``finalize``
    (``destroy_process_group``) and exits while rank 0 still runs its final validation handlers (robust
    validation takes seconds to minutes): a gloo rank that tore down its group and exited while its peer still
    worked aborted (``terminate called without an active exception``, SIGABRT)."""
    if distributed_ready():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum ``values`` over all ranks (no-op without an initialised process group); returns a new tensor
    on the input's device. Float64 so sums of per-sample losses agree bit-for-bit on every rank."""
    out = values.detach().to(torch.float64)
    if distributed_ready():
        dev = get_dist_device() or torch.device("cpu")
        buf = out.to(dev)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        out = buf.to(values.device)
    return out


def all_gather_cat(values: torch.Tensor) -> torch.Tensor:
    """Concatenate ``values`` (first dims may differ) from all ranks in rank order; identity when single-process.

    Gathered as a plain tensor: slicing the gathered rows of a MetaTensor (``evenly_divisible_all_gather``
    trims each rank's padding) makes MONAI collate its batched metadata, which fails (``Inconsistent batched
    metadata dicts``) for values computed from a bundle's MetaTensor batches."""
    if not distributed_ready():
        return values
    return evenly_divisible_all_gather(plain_tensor(values), concat=True).to(values.device)
