"""Two-process (gloo, CPU) DDP run of DPAAT and AMAT through a real ``SupervisedTrainer``: every rank must
see the same global criterion and keep identical per-sample epsilon tables."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

WORLD = 2


def _tiny_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, 2, 1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 8, 3, 2, 1),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2),
    )


def _worker(rank: int, folder: str) -> None:
    import torch.distributed as dist
    from ignite.engine import Events
    from monai.data import DataLoader, DistributedSampler
    from monai.engines import SupervisedTrainer

    from monai_dpaat.attacks import PGD
    from monai_dpaat.training import AMATIteration, DPAATIteration

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD)
    data = torch.load(f"{folder}/data.pt", weights_only=True)
    items = [{"image": x, "label": int(y), "index": i} for i, (x, y) in enumerate(zip(data["images"], data["labels"]))]
    results = {}
    for name, cls in (("dpaat", DPAATIteration), ("amat", AMATIteration)):
        net = torch.nn.parallel.DistributedDataParallel(_tiny_cnn())
        attack = PGD(eps=4 / 255, alpha=1 / 255, steps=2, generator=torch.Generator().manual_seed(rank))
        it = cls(num_samples=len(items), attack=attack)
        sampler = DistributedSampler(items, even_divisible=True, shuffle=True, seed=1)
        trainer = SupervisedTrainer(
            device="cpu", max_epochs=2, train_data_loader=DataLoader(items, batch_size=4, sampler=sampler), network=net,
            optimizer=torch.optim.Adam(net.parameters(), 1e-2), loss_function=torch.nn.CrossEntropyLoss(),
            iteration_update=it,
        )
        log = []
        if name == "dpaat":
            trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: sampler.set_epoch(e.state.epoch))

            @trainer.on(Events.ITERATION_COMPLETED)
            def _record(engine, it=it, log=log):
                dl = it.last_loss_change.double()
                log.append((engine.state.adversarial["loss_change_mean"], float(dl.sum()), dl.numel()))

        trainer.run()
        results[name] = {"log": log, "state": it.state_dict(), "params": [p.detach().clone() for p in net.parameters()]}
    torch.save(results, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_rank_gloo_run_shares_criterion_and_epsilon_tables(data_dir: Path):
    from monai_dpaat.data import ham10000_datalists, ham10000_transforms

    lists = ham10000_datalists(data_dir / "ham10000", classes=("mel", "nv"), val_fraction=None)
    tf = ham10000_transforms(32)
    picked = [x for x in lists["train"] if x["label"] == 0][:9] + [x for x in lists["train"] if x["label"] == 1][:9]
    decoded = [tf(dict(x)) for x in picked]
    with tempfile.TemporaryDirectory() as folder:
        torch.save({"images": torch.stack([d["image"] for d in decoded]),
                    "labels": torch.tensor([int(d["label"]) for d in decoded])}, f"{folder}/data.pt")
        mp.start_processes(_worker, args=(folder,), nprocs=WORLD, join=True, start_method="spawn")
        r0, r1 = (torch.load(f"{folder}/rank{r}.pt", weights_only=False) for r in range(WORLD))

    log0, log1 = r0["dpaat"]["log"], r1["dpaat"]["log"]
    assert len(log0) == len(log1) == 6  # 18 samples / 2 ranks / batch 4 -> 3 iterations x 2 epochs
    local_differs = False
    for (mu0, s0, n0), (mu1, s1, n1) in zip(log0, log1):
        assert mu0 == mu1  # the same criterion on both ranks, bit for bit
        assert mu0 == pytest.approx((s0 + s1) / (n0 + n1), rel=1e-5, abs=1e-9)  # = the global batch mean
        local_differs |= abs(mu0 - s0 / n0) > 1e-6
    assert local_differs  # ... which is not what either rank would have computed alone
    for method in ("dpaat", "amat"):
        s0, s1 = r0[method]["state"], r1[method]["state"]
        for key in s0:
            assert torch.equal(s0[key], s1[key]), (method, key)
        assert not torch.allclose(s0["epsilon"], s0["epsilon"][0])  # tables were updated from both ranks' samples
        for p0, p1 in zip(r0[method]["params"], r1[method]["params"]):
            assert torch.allclose(p0, p1)  # DDP kept the replicas equal through the adversarial steps


def _slow_rank0_worker(rank: int, folder: str) -> None:
    """A 2-rank trainer with ``TrainHandlers`` whose rank 0 spends 2 s in an ``EPOCH_COMPLETED`` handler (as
    robust validation does in the last epoch); each rank records when its ``trainer.run()`` returned."""
    import time

    import torch.distributed as dist
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer

    from monai_dpaat.bundle_overrides import TrainHandlers
    from monai_dpaat.training import ATIteration

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD)
    items = [{"image": torch.rand(3, 8, 8), "label": i % 2} for i in range(4)]
    net = torch.nn.parallel.DistributedDataParallel(_tiny_cnn())
    handlers = TrainHandlers(ATIteration())
    trainer = SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=torch.utils.data.DataLoader(
        items, batch_size=2), network=net, optimizer=torch.optim.SGD(net.parameters(), 1e-3),
        loss_function=torch.nn.CrossEntropyLoss(), iteration_update=handlers, additional_metrics={"adv": handlers})
    if rank == 0:
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: time.sleep(2.0))
    trainer.run()
    Path(folder, f"returned{rank}").write_text(repr(time.time()))
    dist.destroy_process_group()


def test_ranks_leave_training_together():
    """Rank 1 returns from ``trainer.run()`` only after rank 0's slow last-epoch handlers (the barrier at
    ``COMPLETED``): without it rank 1 returned 2 s earlier and went on to tear down its process group."""
    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(_slow_rank0_worker, args=(folder,), nprocs=WORLD, join=True, start_method="spawn")
        returned = [float(Path(folder, f"returned{r}").read_text()) for r in range(WORLD)]
    assert abs(returned[1] - returned[0]) < 1.0, returned
