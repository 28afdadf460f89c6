"""Fault tolerance: a training run SIGKILLed at random points always leaves a loadable newest checkpoint,
and a run resumed from it continues (trainer iteration, optimizer and DPAAT state) instead of restarting.

The training is a tiny MONAI ``SupervisedTrainer`` with DPAAT (small_cnn on 16 random 16x16 images, batch 4,
1-step PGD) and :class:`~monai_dpaat.handlers.checkpoint.AtomicCheckpointSaver` saving every iteration.
Each run is a real OS process killed with SIGKILL. To keep the suite fast, the processes are forked from one
"zygote" subprocess that imports torch/MONAI once and computes nothing (so forking it is safe); each fork
is an ordinary process with its own memory, killed by the test at a seeded random delay.

Run as a script (``python tests/test_fault_tolerance.py --zygote``) this file is that zygote.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

CKPT_RE = re.compile(r"^checkpoint_iteration=(\d+)\.pt$")
NUM_SAMPLES = 16


# ---------------------------------------------------------------------------------------------- the run
def build_run(ckpt_dir: str | None, max_epochs: int, resume: str | None = None, seed: int = 0):
    """A tiny DPAAT ``SupervisedTrainer``; with ``ckpt_dir`` it saves every iteration atomically, with
    ``resume`` it first restores model, optimizer, trainer and method state from that checkpoint.
    Returns ``(trainer, iteration_update, network, losses)`` (``losses`` fills with the per-iteration loss)."""
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer
    from monai.handlers import CheckpointLoader
    from monai.utils import set_determinism

    from monai_dpaat.attacks import PGD
    from monai_dpaat.handlers.checkpoint import AtomicCheckpointSaver
    from monai_dpaat.networks import build_classifier
    from monai_dpaat.training import DPAATIteration
    from monai_dpaat.utils import checkpoint_dict

    set_determinism(seed=seed)
    g = torch.Generator().manual_seed(1234)
    x = torch.rand(NUM_SAMPLES, 3, 16, 16, generator=g)
    data = [{"image": x[i], "label": i % 2, "index": i} for i in range(NUM_SAMPLES)]
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True)
    net = build_classifier("small_cnn", num_classes=2, in_channels=3)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    method = DPAATIteration(NUM_SAMPLES, attack=PGD(eps=8 / 255, alpha=2 / 255, steps=1, value_range=(0.0, 1.0)))
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=max_epochs, train_data_loader=loader,
                                network=net, optimizer=opt, loss_function=torch.nn.CrossEntropyLoss(),
                                iteration_update=method)
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"])))
    save_dict = checkpoint_dict(model=net, optimizer=opt, trainer=trainer, method=method)
    if resume is not None:
        CheckpointLoader(load_path=resume, load_dict=save_dict, map_location="cpu").attach(trainer)
    if ckpt_dir is not None:
        AtomicCheckpointSaver(ckpt_dir, save_dict, save_interval=1, epoch_level=False, n_saved=2).attach(trainer)
    return trainer, method, net, losses


def checkpoints(folder: Path) -> dict[int, Path]:
    """``{iteration: path}`` of the complete checkpoint files in ``folder``."""
    out = {}
    for p in folder.iterdir():
        m = CKPT_RE.match(p.name)
        if m:
            out[int(m.group(1))] = p
    return out


# ---------------------------------------------------------------------------------------------- zygote
def _child(cmd: dict) -> None:
    """Body of a forked training process: log to a file, optionally slow down / pause checkpoint writes."""
    log = os.open(os.path.join(cmd["ckpt_dir"], f"run{cmd['run']}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        torch.set_num_threads(1)
        original_save = torch.save
        saves = [0]

        def slow_save(obj, f, *args, **kwargs):  # ignite's DiskSaver calls torch.save(checkpoint, tmp_file)
            if isinstance(f, (str, os.PathLike)):
                return original_save(obj, f, *args, **kwargs)
            buf = io.BytesIO()
            original_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            saves[0] += 1
            if cmd.get("pause_at_save") == saves[0]:  # the test kills us here, half-way through a write
                Path(cmd["ckpt_dir"], f"in_save{cmd['run']}").write_text(str(len(data)))
                time.sleep(600)
            time.sleep(cmd.get("slow_save", 0.0))
            f.write(data[len(data) // 2:])

        torch.save = slow_save
        trainer, _, _, _ = build_run(cmd["ckpt_dir"], cmd["max_epochs"], cmd.get("resume"), cmd.get("seed", 0))
        trainer.run()
        print("DONE", flush=True)
        os._exit(0)
    except BaseException:
        traceback.print_exc()
        print("FAILED", flush=True)
        os._exit(1)


def zygote() -> None:
    """Import everything once, then fork a training process per ``train`` command read from stdin."""
    import monai.engines  # noqa: F401
    import monai.handlers  # noqa: F401

    import monai_dpaat.handlers.checkpoint  # noqa: F401
    import monai_dpaat.networks  # noqa: F401
    import monai_dpaat.training  # noqa: F401

    print("ready", flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "train":
            pid = os.fork()
            if pid == 0:
                _child(cmd)
            print(json.dumps({"pid": pid}), flush=True)
        elif cmd["cmd"] == "wait":
            _, status = os.waitpid(cmd["pid"], 0)
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
            print(json.dumps({"signal": sig, "exit": code}), flush=True)
        else:
            break


if __name__ == "__main__" and "--zygote" in sys.argv:
    zygote()
    sys.exit(0)

# ---------------------------------------------------------------------------------------------- tests
import pytest  # noqa: E402

from monai_dpaat.utils import latest_checkpoint, load_weights  # noqa: E402


class Zygote:
    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, __file__, "--zygote"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert self._read(300) == "ready"

    def _read(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().strip() if ready else ""
        if not line:
            self.proc.kill()
            raise AssertionError(f"the zygote process did not answer: {self.proc.stderr.read()[-3000:]}")
        return line

    def ask(self, cmd: dict, timeout: float = 120) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._read(timeout))

    def close(self) -> None:
        self.proc.kill()  # our own zygote: no need for a slow interpreter shutdown
        self.proc.wait(30)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()


@pytest.fixture(scope="module")
def zyg():
    z = Zygote()
    yield z
    z.close()


def _wait_for(predicate, log: Path, timeout: float = 120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if log.is_file() and ("FAILED" in log.read_text() or "DONE" in log.read_text()):
            raise AssertionError(f"the training process ended before it was killed:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)
    raise AssertionError(f"timed out; log:\n{log.read_text()[-3000:] if log.is_file() else '(none)'}")


def _kill(zyg: Zygote, pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    status = zyg.ask({"cmd": "wait", "pid": pid})
    assert status["signal"] == signal.SIGKILL, status


def _check_checkpoints(folder: Path) -> int:
    """Every complete checkpoint loads with weights_only=True and is self-consistent; returns the newest iteration."""
    found = checkpoints(folder)
    assert found, f"no checkpoint in {folder}: {sorted(p.name for p in folder.iterdir())}"
    for it, path in found.items():
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert {"model", "optimizer", "trainer", "method"} <= set(ckpt), sorted(ckpt)
        assert ckpt["trainer"]["iteration"] == it
        # DPAAT's state was carried through every resume: one update per iteration since the very first one
        assert int(ckpt["method"]["num_updates"]) == it
        assert ckpt["method"]["epsilon"].shape == (NUM_SAMPLES,)
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    newest = max(found)
    assert Path(latest_checkpoint(str(folder))) == found[newest]
    from monai_dpaat.networks import build_classifier

    load_weights(build_classifier("small_cnn", num_classes=2, in_channels=3), found[newest], key="model")
    return newest


def test_sigkill_at_random_points_leaves_a_loadable_checkpoint_and_resume_continues(zyg, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    rng = random.Random(20240611)  # seeded "random" kill points
    resumed_from, newest = None, 0
    for run in range(5):
        resume = str(folder / f"checkpoint_iteration={newest}.pt") if resumed_from is not None else None
        cmd = {"cmd": "train", "run": run, "ckpt_dir": str(folder), "resume": resume, "max_epochs": 100000,
               "slow_save": 0.01}
        pid = zyg.ask(cmd)["pid"]
        log = folder / f"run{run}.log"
        start = newest
        # the (resumed) run makes progress past the checkpoint it started from, then dies at a random moment
        _wait_for(lambda: max(checkpoints(folder), default=0) > start, log)
        time.sleep(rng.uniform(0.0, 0.3))
        _kill(zyg, pid)
        newest = _check_checkpoints(folder)
        assert newest > start, f"run {run} did not continue from iteration {start}"
        resumed_from = newest


def test_sigkill_in_the_middle_of_a_checkpoint_write(zyg, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    pid = zyg.ask({"cmd": "train", "run": 0, "ckpt_dir": str(folder), "max_epochs": 100000, "pause_at_save": 3})["pid"]
    marker = folder / "in_save0"
    _wait_for(marker.is_file, folder / "run0.log")
    _kill(zyg, pid)
    # the half-written temporary file is there, under a name no loader picks up
    partial = [p for p in folder.iterdir() if p.is_file() and not CKPT_RE.match(p.name) and p.suffix != ".log"
               and not p.name.startswith("in_save")]
    assert partial and all(p.stat().st_size < int(marker.read_text()) for p in partial), sorted(folder.iterdir())
    with pytest.raises(Exception):
        torch.load(partial[0], map_location="cpu", weights_only=True)
    assert _check_checkpoints(folder) == 2  # the two finished saves
    # resume in-process from the newest good checkpoint and finish the epoch
    trainer, method, _, _ = build_run(str(folder), max_epochs=1, resume=latest_checkpoint(str(folder)))
    trainer.run()
    assert trainer.state.iteration == 4 and int(method.num_updates) == 4
    assert _check_checkpoints(folder) == 4


def test_same_seed_gives_identical_training_metrics():
    runs = []
    for _ in range(2):
        trainer, method, net, losses = build_run(None, max_epochs=2, seed=3)
        trainer.run()
        with torch.no_grad():
            g = torch.Generator().manual_seed(1234)
            x = torch.rand(NUM_SAMPLES, 3, 16, 16, generator=g)
            acc = (net.eval()(x).argmax(1) == torch.arange(NUM_SAMPLES) % 2).float().mean().item()
        runs.append((losses, method.epsilon.clone(), acc, {k: v.clone() for k, v in net.state_dict().items()}))
    (l1, e1, a1, w1), (l2, e2, a2, w2) = runs
    assert len(l1) == 8 and l1 == l2
    assert torch.equal(e1, e2) and a1 == a2
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
