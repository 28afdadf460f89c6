"""The fast training adversaries of issue 15 in the quick config of both segmentation bundles (the HAM10000 bundle's
runs are in ``test_single_step.py``): ``--adversary fgsm-rs | n-fgsm | free`` trains DPAAT on the real samples, one
epoch, through :class:`monai.bundle.ConfigWorkflow` as ``python -m monai.bundle run`` builds it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from monai_dpaat.attacks import FGSMRS, NFGSM, FreeAT

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
CASES = [("nuinsseg_adversarial_segmentation", "nuclei_he", "n-fgsm", NFGSM),
         ("nuinsseg_adversarial_segmentation", "nuclei_he", "free", FreeAT),
         ("brats_adversarial_segmentation_3d", "brats2013", "fgsm-rs", FGSMRS),
         ("brats_adversarial_segmentation_3d", "brats2013", "free", FreeAT)]


@pytest.mark.parametrize("name,data,adversary,cls", CASES, ids=[f"{c[0].split('_')[0]}-{c[2]}" for c in CASES])
def test_quick_dpaat_with_a_fast_adversary(name, data, adversary, cls, data_dir, tmp_path):
    from monai.bundle import ConfigWorkflow

    bundle = tmp_path / name
    shutil.copytree(BUNDLES / name, bundle, ignore=shutil.ignore_patterns("models", "eval", "__pycache__"))
    configs = [str(bundle / "configs" / f) for f in ("train.json", "methods/dpaat.json", "quick.json")]
    workflow = ConfigWorkflow(config_file=configs, meta_file=str(bundle / "configs" / "metadata.json"),
                              logging_file=False, workflow_type=None, bundle_root=str(bundle),
                              dataset_dir=str(data_dir / data), max_epochs=1, adversary=adversary, free_replays=2)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    parsed = workflow.parser.get_parsed_content
    iteration, trainer = parsed("iteration_update"), parsed("train#trainer")
    assert type(iteration.attack) is cls
    assert trainer.state.epoch == 1 and trainer.state.iteration > 0
    steps = int(next(iter(trainer.optimizer.state_dict()["state"].values()))["step"])
    assert steps == (2 if cls is FreeAT else 1) * trainer.state.iteration
    saved = torch.load(bundle / "models" / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    assert torch.isfinite(saved["method"]["epsilon"]).all()
    if cls is FreeAT:  # the perturbation the training backward moved, inside the largest per-sample budget
        assert 0 < float(iteration.attack.delta.abs().max()) <= float(iteration.epsilon.max()) + 1e-6
