"""Fault tolerance: a training run SIGKILLed at random points always leaves a loadable newest checkpoint,
and a run resumed from it continues (trainer iteration, optimizer and DPAAT state) instead of restarting.

The training is a tiny MONAI ``SupervisedTrainer`` with DPAAT (small_cnn on 16 random 16x16 images, batch 4,
1-step PGD) and :class:`~monai_dpaat.handlers.checkpoint.AtomicCheckpointSaver` saving every iteration.
Each run is a real OS process killed with SIGKILL. To keep the suite fast, the processes are forked from one
"zygote" subprocess that imports torch/MONAI once and computes nothing (so forking it is safe); each fork
is an ordinary process with its own memory, killed by the test at a seeded random delay.

The same zygote forks processes that save a new best ``model.pt`` and SIGKILL themselves at each step of the save
path in turn (``model.pt`` is always there, whole). The other tests: a resume falls back past a truncated newest
checkpoint, ``n_saved`` rotates the files of the run a resume continues, checkpoints record their training data and
a loader refuses other data, a resume continues the best-model tracking of ``model.pt`` and the early-stopping
patience (a scripted validation score), and the bundle folder's run lock (refused, taken over after SIGKILL,
released on exit).

Run as a script (``python tests/test_fault_tolerance.py --zygote``) this file is that zygote.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
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


def _save_best_child(cmd: dict) -> None:
    """Body of a forked process that saves a best ``model.pt`` (``key_metric_filename``) and an interval checkpoint
    (``n_saved=1``) through :class:`AtomicCheckpointSaver` at two epochs, the second better than the first, and
    SIGKILLs itself at step ``kill_at`` of the second epoch's saves. A step is entering or leaving any file-system
    function the save path may use (and the middle of writing the checkpoint's bytes), so the kills cover every
    point between "old file removed" and "new file complete". ``kill_at=0``: no kill; prints the number of steps."""
    log = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        from ignite.engine import Engine, Events

        from monai_dpaat.handlers.checkpoint import AtomicCheckpointSaver

        torch.set_num_threads(1)
        net = torch.nn.Linear(4, 2)
        armed, steps = [False], [0]

        def step() -> None:
            if armed[0]:
                steps[0] += 1
                if steps[0] == cmd["kill_at"]:
                    os.kill(os.getpid(), signal.SIGKILL)

        def hooked(function):
            def wrapper(*args, **kwargs):
                step()
                out = function(*args, **kwargs)
                step()
                return out

            return wrapper

        original_save = torch.save

        def save(obj, f, *args, **kwargs):
            step()
            if isinstance(f, (str, os.PathLike)):
                original_save(obj, f, *args, **kwargs)
            else:  # a file object: kill half-way through its bytes too
                buf = io.BytesIO()
                original_save(obj, buf, *args, **kwargs)
                data = buf.getvalue()
                f.write(data[: len(data) // 2])
                f.flush()
                step()
                f.write(data[len(data) // 2:])
            step()

        for owner, names in ((os, ("open", "replace", "rename", "remove", "unlink", "fsync", "chmod", "link")),
                             (Path, ("unlink", "rename", "replace", "touch")),
                             (tempfile, ("mkstemp", "NamedTemporaryFile")), (shutil, ("move", "copyfile"))):
            for name in names:
                setattr(owner, name, hooked(getattr(owner, name)))
        torch.save = save

        def new_best(engine) -> None:  # runs before the saver's handlers (attached first)
            with torch.no_grad():
                for p in net.parameters():
                    p.fill_(float(engine.state.epoch))
            engine.state.metrics["acc"] = 0.1 * engine.state.epoch
            armed[0] = engine.state.epoch == 2

        engine = Engine(lambda e, b: None)
        engine.add_event_handler(Events.EPOCH_COMPLETED, new_best)
        AtomicCheckpointSaver(cmd["dir"], {"model": net}, save_key_metric=True, key_metric_name="acc",
                              key_metric_filename="model.pt", save_interval=1, n_saved=1).attach(engine)
        engine.run([0], max_epochs=2)
        print(json.dumps({"steps": steps[0]}), flush=True)
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
        if cmd["cmd"] in ("train", "save_best"):
            pid = os.fork()
            if pid == 0:
                (_child if cmd["cmd"] == "train" else _save_best_child)(cmd)
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


def test_sigkill_at_every_step_of_a_best_model_save_keeps_model_pt(zyg, tmp_path):
    """``model.pt`` (a fixed ``key_metric_filename``) and an ``n_saved=1`` checkpoint are replaced atomically: killed
    at any step of the save, the folder holds them whole, with the old or the new weights, never neither."""

    def save_best(kill_at: int) -> tuple[Path, dict]:
        folder = tmp_path / f"kill{kill_at}"
        folder.mkdir()
        log = tmp_path / f"kill{kill_at}.log"
        pid = zyg.ask({"cmd": "save_best", "dir": str(folder), "log": str(log), "kill_at": kill_at})["pid"]
        status = zyg.ask({"cmd": "wait", "pid": pid})
        if kill_at:
            assert status["signal"] == signal.SIGKILL, f"step {kill_at}: {status}, log:\n{log.read_text()[-3000:]}"
        else:
            assert status["exit"] == 0, log.read_text()[-3000:]
        return folder, (json.loads(log.read_text().strip().splitlines()[-1]) if not kill_at else {})

    def weights(path: Path) -> float:
        state = torch.load(path, map_location="cpu", weights_only=True)
        values = torch.cat([v.flatten() for v in state.values()]).unique()
        assert len(values) == 1 and float(values[0]) in (1.0, 2.0), f"{path.name} holds {values}"
        return float(values[0])

    folder, out = save_best(0)
    assert weights(folder / "model.pt") == 2.0
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt", "model_epoch=2.pt"]
    n_steps = out["steps"]
    assert n_steps >= 8, n_steps
    seen = set()
    for kill_at in range(1, n_steps + 1):
        folder, _ = save_best(kill_at)
        names = sorted(p.name for p in folder.iterdir())
        assert "model.pt" in names, f"killed at step {kill_at} of {n_steps}: no model.pt, only {names}"
        seen.add(weights(folder / "model.pt"))
        interval = [n for n in names if re.fullmatch(r"model_epoch=\d+\.pt", n)]
        assert interval, f"killed at step {kill_at} of {n_steps}: no interval checkpoint, only {names}"
        for name in interval:
            weights(folder / name)
    assert seen == {1.0, 2.0}  # the kills landed both before and after the new file was in place


def test_resume_falls_back_past_a_truncated_newest_checkpoint(tmp_path):
    from monai_dpaat.utils import resume_checkpoint

    folder = tmp_path / "ckpt"
    trainer, _, _, _ = build_run(str(folder), max_epochs=1)
    trainer.run()
    assert sorted(checkpoints(folder)) == [3, 4]
    newest = checkpoints(folder)[4]
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) - 10])  # what a non-atomic copy or a full disk leaves
    with pytest.warns(UserWarning, match=r"resuming from '.*checkpoint_iteration=3\.pt': the newer checkpoint\(s\) "
                                         r"'.*checkpoint_iteration=4\.pt' \(\w+Error: .*\) are unreadable"):
        path = resume_checkpoint(str(folder))
    assert Path(path) == checkpoints(folder)[3]
    trainer, method, _, _ = build_run(str(folder), max_epochs=2, resume=path)
    trainer.run()
    assert trainer.state.iteration == 8 and int(method.num_updates) == 8


def test_a_resumed_run_rotates_the_earlier_runs_checkpoints(tmp_path):
    """``n_saved=2`` holds across a resume: the earlier run's files count, instead of piling up beside the new ones."""
    folder = tmp_path / "ckpt"
    trainer, _, _, _ = build_run(str(folder), max_epochs=1)
    trainer.run()
    trainer, _, _, _ = build_run(str(folder), max_epochs=2, resume=str(checkpoints(folder)[4]))
    trainer.run()
    assert sorted(checkpoints(folder)) == [7, 8], sorted(p.name for p in folder.iterdir())
    assert _check_checkpoints(folder) == 8


def test_checkpoints_record_the_training_data_and_a_loader_refuses_other_data(tmp_path):
    from ignite.engine import Engine
    from monai.handlers import CheckpointLoader

    from monai_dpaat.handlers import AtomicCheckpointSaver, TrainingData

    items = [{"image": f"/data/ISIC_{i}.jpg", "label": i % 2, "index": i} for i in range(6)]
    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    AtomicCheckpointSaver(str(tmp_path), {"model": net, "data": TrainingData(items, seed=3)}, save_interval=1).attach(
        engine)
    engine.run([0], max_epochs=1)
    ckpt = torch.load(tmp_path / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    assert ckpt["data"]["seed"] == 3 and ckpt["data"]["ids"]["train"] == [f"ISIC_{i}.jpg" for i in range(6)]
    assert ckpt["data"]["num_samples"] == 6
    path = str(tmp_path / "checkpoint_epoch=1.pt")
    CheckpointLoader(path, {"model": net, "data": TrainingData(items, seed=3)})(Engine(lambda e, b: None))
    other = CheckpointLoader(path, {"model": net, "data": TrainingData(items[::-1], seed=3)})
    with pytest.raises(ValueError, match=r"6 of the 6 per-sample table rows would belong to other items"):
        other(Engine(lambda e, b: None))


# ---------------------------------------------------------------------------------------------- best model on resume
def _scripted_run(folder: Path, scores: dict[int, float], max_epochs: int, resume: str | None = None,
                  patience: int = 3, old_checkpoint: bool = False):
    """A tiny ``SupervisedTrainer`` validated every epoch by a ``SupervisedEvaluator`` whose key metric ``score`` is
    ``scores[epoch]``, wired as the bundles are: the best-model saver (``model.pt``) and the early stopping in the
    validator's handlers, both entries of the trainer's interval checkpoints (``save_interval=1``), and a resume
    from ``resume`` loading them (only where the checkpoint has them). ``old_checkpoint``: save without them, as
    monai-dpaat did before. Returns ``(trainer, evaluator, network)``."""
    from ignite.metrics import Metric
    from monai.engines import SupervisedEvaluator, SupervisedTrainer
    from monai.handlers import CheckpointLoader, ValidationHandler
    from monai.utils import set_determinism

    from monai_dpaat.handlers.checkpoint import AtomicCheckpointSaver, ResumableEarlyStopHandler, entries_saved_in
    from monai_dpaat.utils import checkpoint_dict

    class ScriptedScore(Metric):
        """The validation score at trainer epoch ``e`` (the validator runs with the trainer's epoch): ``scores[e]``."""

        def reset(self) -> None:
            pass

        def update(self, output) -> None:
            pass

        def compute(self) -> float:
            raise NotImplementedError

        def iteration_completed(self, engine) -> None:
            pass

        def completed(self, engine, name: str) -> None:
            engine.state.metrics[name] = scores[engine.state.epoch]

    set_determinism(seed=0)
    g = torch.Generator().manual_seed(7)
    data = [{"image": torch.rand(4, generator=g), "label": i % 2} for i in range(8)]
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=False)
    net = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    best = AtomicCheckpointSaver(str(folder), {"model": net}, save_key_metric=True, key_metric_filename="model.pt")
    early_stop = ResumableEarlyStopHandler(patience=patience, score_function=lambda e: e.state.metrics["score"])
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=net,
                                    key_val_metric={"score": ScriptedScore()}, val_handlers=[best, early_stop])
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=max_epochs, train_data_loader=loader,
                                network=net, optimizer=opt, loss_function=torch.nn.CrossEntropyLoss(),
                                train_handlers=[ValidationHandler(validator=evaluator, interval=1, epoch_level=True)])
    early_stop.set_trainer(trainer)
    validation = {} if old_checkpoint else {"best_model_saver": best, "early_stop": early_stop}
    if resume is not None:
        load_dict = checkpoint_dict(model=net, optimizer=opt, trainer=trainer,
                                    **entries_saved_in(resume, best_model_saver=best, early_stop=early_stop))
        CheckpointLoader(load_path=resume, load_dict=load_dict, map_location="cpu").attach(trainer)
    save_dict = checkpoint_dict(model=net, optimizer=opt, trainer=trainer, **validation)
    AtomicCheckpointSaver(str(folder), save_dict, save_interval=1, epoch_level=True, n_saved=2).attach(trainer)
    return trainer, evaluator, net


def _weights(net: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_a_resumed_run_keeps_the_best_model_unless_a_better_one_comes(tmp_path):
    """Killed after epoch 3 (best 0.8 at epoch 2 in ``model.pt``) and resumed into fresh objects: epoch 4's worse
    0.7 leaves ``model.pt`` byte-identical, epoch 5's better 0.9 replaces it; MONAI's best metric and the
    early-stopping patience continue too."""
    from ignite.engine import Events

    from monai_dpaat.utils import load_weights

    folder = tmp_path / "models"
    scores = {1: 0.5, 2: 0.8, 3: 0.6, 4: 0.7, 5: 0.9}
    weights = {}
    trainer, evaluator, net = _scripted_run(folder, scores, max_epochs=3)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: weights.__setitem__(e.state.epoch, _weights(net)))
    trainer.run()
    model_pt = folder / "model.pt"
    saved_best = model_pt.read_bytes()
    assert all(torch.equal(v, weights[2][k]) for k, v in torch.load(model_pt, weights_only=True).items())
    ckpt = torch.load(folder / "checkpoint_epoch=3.pt", map_location="cpu", weights_only=True)
    assert ckpt["best_model_saver"]["key_metric"] == [[0.8, "model_key_metric=0.8000.pt"]]
    assert ckpt["best_model_saver"]["best_metric"] == 0.8 and ckpt["best_model_saver"]["best_metric_epoch"] == 2
    assert ckpt["early_stop"] == {"counter": 1, "best_score": 0.8}

    # "killed" here; the resume builds everything afresh and loads the newest checkpoint
    trainer, evaluator, net = _scripted_run(folder, scores, max_epochs=4, resume=str(folder / "checkpoint_epoch=3.pt"))
    trainer.run()
    assert trainer.state.epoch == 4 and evaluator.state.metrics["score"] == 0.7
    assert model_pt.read_bytes() == saved_best, "a worse model after the resume replaced model.pt"
    assert (evaluator.state.best_metric, evaluator.state.best_metric_epoch) == (0.8, 2)
    ckpt = torch.load(folder / "checkpoint_epoch=4.pt", map_location="cpu", weights_only=True)
    assert ckpt["early_stop"] == {"counter": 2, "best_score": 0.8}  # the patience kept counting

    trainer, evaluator, net = _scripted_run(folder, scores, max_epochs=5, resume=str(folder / "checkpoint_epoch=4.pt"))
    trainer.run()
    assert model_pt.read_bytes() != saved_best, "a better model after the resume did not replace model.pt"
    best_state = load_weights(torch.nn.Linear(4, 2), model_pt).state_dict()
    assert all(torch.equal(v, _weights(net)[k]) for k, v in best_state.items())
    assert (evaluator.state.best_metric, evaluator.state.best_metric_epoch) == (0.9, 5)
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".pt") == [
        "checkpoint_epoch=4.pt", "checkpoint_epoch=5.pt", "model.pt"]


def test_a_resumed_run_stops_early_where_the_uninterrupted_run_does(tmp_path):
    """Patience 3 after the best score of epoch 2: an uninterrupted run stops at epoch 5; so does one killed after
    epoch 3 and resumed (its patience counter was saved), instead of training on with a fresh patience."""
    scores = {e: 0.6 for e in range(1, 11)}
    scores[2] = 0.8
    trainer, _, _ = _scripted_run(tmp_path / "whole", scores, max_epochs=10)
    trainer.run()
    assert trainer.state.epoch == 5
    folder = tmp_path / "resumed"
    trainer, _, _ = _scripted_run(folder, scores, max_epochs=3)
    trainer.run()
    trainer, _, _ = _scripted_run(folder, scores, max_epochs=10, resume=str(folder / "checkpoint_epoch=3.pt"))
    trainer.run()
    assert trainer.state.epoch == 5


def test_a_checkpoint_without_the_best_model_state_resumes_with_a_warning(tmp_path):
    """A checkpoint written before the best-model tracking was saved still resumes: a warning says the tracking and
    the patience restart (the first validation then replaces model.pt, as before). A restored tracking whose
    ``model.pt`` was deleted restarts too, with a warning, instead of never saving a best model again."""
    folder = tmp_path / "models"
    scores = {1: 0.5, 2: 0.8, 3: 0.6, 4: 0.7}
    trainer, _, _ = _scripted_run(folder, scores, max_epochs=3, old_checkpoint=True)
    trainer.run()
    assert "best_model_saver" not in torch.load(folder / "checkpoint_epoch=3.pt", weights_only=True)
    saved_best = (folder / "model.pt").read_bytes()
    with pytest.warns(UserWarning, match=r"(?s)checkpoint '.*checkpoint_epoch=3\.pt' has no 'best_model_saver', "
                                         r"'early_stop' entries .*the best-model tracking restarts: the next "
                                         r"validation replaces model\.pt.*patience counter and best score restart"):
        trainer, evaluator, _ = _scripted_run(folder, scores, 4, resume=str(folder / "checkpoint_epoch=3.pt"))
    trainer.run()
    assert trainer.state.epoch == 4 and (folder / "model.pt").read_bytes() != saved_best
    assert evaluator.state.best_metric_epoch == 4
    # a resume whose model.pt is gone: the restored tracking would never save one again unless it restarts
    (folder / "model.pt").unlink()
    scores[5] = 0.1
    with pytest.warns(UserWarning, match=r"the best model file\(s\) model\.pt recorded in the checkpoint are missing"):
        trainer, evaluator, _ = _scripted_run(folder, scores, 5, resume=str(folder / "checkpoint_epoch=4.pt"))
        trainer.run()
    assert (folder / "model.pt").is_file() and evaluator.state.best_metric_epoch == 5


# ---------------------------------------------------------------------------------------------- run lock
_LOCKER = """
import sys, time
from monai_dpaat.handlers.run_lock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
if sys.argv[2] == "raise":
    raise RuntimeError("the run failed")
time.sleep(120)
"""


def _locker(folder: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _LOCKER, str(folder), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout.readline().strip() == "locked", proc.stderr.read()
    return proc


def test_run_lock_refuses_a_live_owner_takes_over_a_killed_one_and_is_released_on_exceptions(tmp_path):
    import warnings

    from monai_dpaat.handlers import RunLock

    folder = tmp_path / "models"
    lock = folder / "run.lock"
    proc = _locker(folder, "hold")
    try:
        owner = json.loads(lock.read_text())
        assert owner["pid"] == proc.pid and owner["host"] and owner["started"] and "hold" in owner["command"]
        with pytest.raises(RuntimeError, match=rf"in use by another run \(lock '.*run\.lock' held by pid {proc.pid} "):
            RunLock(folder).acquire()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
        proc.communicate()
    assert json.loads(lock.read_text())["pid"] == proc.pid  # left behind by the killed run
    taken_over = rf"(?s)taking over the lock '.*run\.lock' left by pid {proc.pid} on host .* no longer running"
    with pytest.warns(UserWarning, match=taken_over):
        mine = RunLock(folder).acquire()
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    # an earlier run of this process that ended with an exception did not release it: a new run takes it over
    with pytest.warns(UserWarning, match=r"from an earlier run in this process"):
        again = RunLock(folder).acquire()
    assert not mine.held and again.held
    again.release()
    assert not lock.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean folder: no warning
        with RunLock(folder) as third:
            assert third.held and lock.is_file()
    assert not lock.exists()
    # a run that dies of an exception releases its lock at exit
    proc = _locker(folder, "raise")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "the run failed" in err
    assert not lock.exists(), lock.read_text()


def test_a_fresh_run_moves_an_earlier_runs_files_aside_so_a_resume_never_continues_it(tmp_path):
    """A fresh training in a folder holding an earlier run's ``checkpoint_*.pt`` / ``model.pt`` moves them (renames,
    bytes unchanged) into ``earlier_runs/<timestamp>/`` under the lock: a later resume looks at the top level only,
    so it continues this run, never the earlier one (whose higher-numbered files would otherwise stay newest)."""
    import warnings

    from monai_dpaat.handlers import RunLock
    from monai_dpaat.utils import resume_checkpoint

    folder = tmp_path / "models"
    folder.mkdir()
    earlier = {"checkpoint_epoch=3.pt": b"three", "checkpoint_epoch=4.pt": b"four", "model.pt": b"best",
               "checkpoint_final_iteration=9.pt": b"final"}
    for name, data in earlier.items():
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("mine")  # not a run's file: stays
    (folder / "sub").mkdir()
    (folder / "sub" / "checkpoint_epoch=7.pt").write_bytes(b"nested")  # not the top level: stays

    lock = RunLock(folder)
    with pytest.raises(RuntimeError, match=r"archive_earlier_run needs the lock '.*run\.lock': call acquire\(\) first"):
        lock.archive_earlier_run()
    assert all((folder / n).is_file() for n in earlier)  # nothing moved without the lock
    lock.acquire()
    try:
        with pytest.warns(UserWarning, match=r"the output folder '.*models' held an earlier run's files "
                                             r"\['checkpoint_epoch=3\.pt', 'checkpoint_epoch=4\.pt', "
                                             r"'checkpoint_final_iteration=9\.pt', 'model\.pt'\]: this fresh training "
                                             r"moved them into '.*models/earlier_runs/\d{8}-\d{6}'"):
            target = Path(lock.archive_earlier_run())
        assert target.parent == folder / "earlier_runs"
        assert {p.name: p.read_bytes() for p in target.iterdir()} == earlier
        assert sorted(p.name for p in folder.iterdir()) == ["earlier_runs", "notes.txt", "run.lock", "sub"]
        with pytest.raises(FileNotFoundError, match="no checkpoint 'checkpoint_epoch=N.pt' to resume from"):
            resume_checkpoint(str(folder))  # the archive is not looked at
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert lock.archive_earlier_run() is None  # nothing left to move: no warning, no new folder
        # a second fresh run in the same second gets its own folder; nothing is overwritten
        (folder / "model.pt").write_bytes(b"second")
        with pytest.warns(UserWarning, match="moved them into"):
            second = Path(lock.archive_earlier_run())
        assert second != target and (second / "model.pt").read_bytes() == b"second"
        assert (target / "model.pt").read_bytes() == b"best"
    finally:
        lock.release()
