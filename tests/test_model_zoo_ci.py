"""Our three bundles pass the MONAI Model Zoo CI checks that can run offline (issue 12).

The checks are those of the public ``Project-MONAI/model-zoo`` repository (Apache-2.0), reproduced here:

- ``ci/verify_bundle.py`` ``verify_bundle_directory``: the large files of ``large_files.yml`` are fetched
  (``ci/utils.py`` ``download_large_files``), then ``configs/metadata.json``, ``LICENSE``, ``models/model.pt``
  and an ``inference`` config must exist. Our bundles host no weights: ``large_files.yml`` lists
  ``models/model.pt`` with an empty URL, so the check passes once training (here: random weights, as the Zoo's
  own ``_produce_fake_weights``) wrote that file, and fails clearly when it did not.
- ``verify_version_changes`` (the part without the Zoo's ``model_info.json``): the version is in the changelog.
- ``verify_metadata_format``: ``monai.bundle.verify_metadata`` against a JSON schema (see ``_SPEC_SCHEMA``).
- ``verify_data_shape`` and ``verify_torchscript``: ``monai.bundle.verify_net_in_out`` and
  ``monai.bundle.ckpt_export`` (TorchScript) of ``network_def`` from ``configs/inference.json``, on the CPU.
- ``.pre-commit-config.yaml``: ``pretty-format-json --autofix --no-sort-keys --indent=4`` (key order kept,
  ``ensure_ascii`` on), ``end-of-file-fixer``, ``trailing-whitespace``, ``mixed-line-ending``, ``check-yaml``.
- ``ci/get_bundle_requirements.py``: the requirements written from ``monai_version``, ``pytorch_version``,
  ``numpy_version`` and ``required_packages_version`` / ``optional_packages_version`` name only packages of
  PyPI, pinned at the versions of ``constraints.txt`` (this project itself, ``monai-dpaat``, is not on PyPI:
  each bundle's ``docs/README.md`` says to install it from its source first).

Not offline: the Zoo's schema file ``meta_schema_20240725.json`` is a release asset of
``Project-MONAI/MONAI-extra-test-data`` that MONAI downloads (it neither ships nor caches it). Point
``MONAI_DPAAT_META_SCHEMA`` at a downloaded copy to validate against it as well (its md5 is checked); without
it, the metadata is validated against ``_SPEC_SCHEMA``, written from the mandatory keys of the MONAI Bundle
Specification (``docs/source/mb_specification.rst`` of MONAI). ``pip install`` of the requirements needs PyPI.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
BUNDLES = {
    "ham10000_dpaat_classification": ("CC BY-NC 4.0",),
    "nuinsseg_adversarial_segmentation": ("CC BY 4.0",),
    "brats_adversarial_segmentation_3d": ("CC BY-NC-SA 3.0",),
}
#: networks each bundle's ``network_name`` selects (all must pass the shape and TorchScript checks)
NETWORKS = {
    "ham10000_dpaat_classification": (None,),
    "nuinsseg_adversarial_segmentation": (None, "attention_unet_pp"),
    "brats_adversarial_segmentation_3d": (None, "attention_unet_pp"),
}
#: md5 of the Model Zoo repository's ``LICENSE`` (the full Apache License 2.0 text), which each bundle copies
APACHE_2_MD5 = "86d3f3a95c324c9479bd8986968f4327"
#: md5 of ``meta_schema_20240725.json`` (MONAI's ``tests/testing_data/data_config.json``)
ZOO_SCHEMA_MD5 = "06954cad2cc5d3784e72077ac76f0fc8"
#: ``ci/verify_bundle.py``
NECESSARY_FILES = ("configs/metadata.json", "LICENSE")
PREFERRED_FILES = ("models/model.pt", "configs/inference.json")
#: files a run writes into the bundle folder (git-ignored): not part of the bundle the Zoo would receive
RUN_OUTPUTS = ("models", "eval")

_TENSOR = {
    "type": "object",
    "required": ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data",
                 "channel_def"],
    "properties": {
        "type": {"type": "string"},
        "format": {"type": "string"},
        "modality": {"type": "string"},
        "num_channels": {"type": "integer", "minimum": 1},
        "spatial_shape": {"type": "array", "items": {"anyOf": [{"type": "integer", "minimum": 1},
                                                               {"type": "string"}]}},
        "dtype": {"type": "string"},
        "value_range": {"type": "array", "items": {"type": "number"}, "maxItems": 2},
        "is_patch_data": {"type": "boolean"},
        "channel_def": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_PACKAGES = {"type": "object", "additionalProperties": {"type": "string"}}
#: the MONAI Bundle Specification's ``metadata.json`` keys as a JSON schema (the Zoo's own schema file is not
#: reachable offline, see the module docstring); ``changelog`` is required by the Zoo's ``verify_bundle.py``
_SPEC_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["schema", "version", "changelog", "monai_version", "pytorch_version", "numpy_version", "task",
                 "description", "authors", "copyright", "network_data_format"],
    "anyOf": [{"required": ["required_packages_version"]}, {"required": ["optional_packages_version"]}],
    "properties": {
        "schema": {"type": "string", "pattern": "^https://"},
        "version": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
        "changelog": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}},
        "monai_version": {"type": "string"},
        "pytorch_version": {"type": "string"},
        "numpy_version": {"type": "string"},
        "required_packages_version": _PACKAGES,
        "optional_packages_version": _PACKAGES,
        "task": {"type": "string", "minLength": 1},
        "description": {"type": "string", "minLength": 1},
        "authors": {"type": "string", "minLength": 1},
        "copyright": {"type": "string", "minLength": 1},
        "references": {"type": "array", "items": {"type": "string"}},
        "network_data_format": {
            "type": "object",
            "required": ["inputs", "outputs"],
            "properties": {
                "inputs": {"type": "object", "required": ["image"], "additionalProperties": _TENSOR},
                "outputs": {"type": "object", "minProperties": 1, "additionalProperties": _TENSOR},
            },
        },
    },
}


def _bundle(name: str) -> Path:
    return REPO / "bundles" / name


def _copy_bundle(name: str, tmp_path: Path) -> Path:
    """The bundle as it would be submitted to the Zoo: without the git-ignored outputs of local runs."""
    dst = tmp_path / name
    shutil.copytree(_bundle(name), dst, ignore=shutil.ignore_patterns(*RUN_OUTPUTS, "__pycache__"))
    return dst


def _bundle_files(name: str, suffixes: tuple[str, ...]) -> list[Path]:
    root = _bundle(name)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in suffixes
                  and not set(p.relative_to(root).parts[:1]) & set(RUN_OUTPUTS))


def _fake_weights(bundle: Path, network_name: str | None = None) -> Path:
    """``ci/verify_bundle.py`` ``_produce_fake_weights``: ``network_def``'s random weights as models/model.pt."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    if network_name is not None:
        parser["network_name"] = network_name
    path = bundle / "models" / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def _download_large_files(bundle: Path) -> None:
    """``ci/utils.py`` ``download_large_files``: MONAI's ``download_url`` for each entry of large_files.yml."""
    from monai.apps.utils import download_url
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "large_files.yml"))
    for entry in parser.get()["large_files"]:
        entry = {k: v for k, v in entry.items() if not (k in ("hash_val", "hash_type") and v == "")}
        download_url(url=entry["url"], filepath=str(bundle / entry.pop("path")), fuzzy=True,
                     **{k: v for k, v in entry.items() if k != "url"})


def _verify_bundle_directory(bundle: Path) -> None:
    """``ci/verify_bundle.py`` ``verify_bundle_directory`` (large files first, then the file checks)."""
    try:
        _download_large_files(bundle)
    except Exception as e:
        raise ValueError(f"Download large files in {bundle} error.") from e
    for file in NECESSARY_FILES + PREFERRED_FILES:
        if not (bundle / file).exists():
            raise ValueError(f"necessary file {file} is not existing.")


def _requirements(metadata: dict) -> list[str]:
    """``ci/get_bundle_requirements.py`` ``get_requirements`` (without ``ALLOW_MONAI_RC``)."""
    libs = []
    for key, package in (("monai_version", "monai"), ("pytorch_version", "torch"), ("numpy_version", "numpy")):
        if key in metadata:
            libs.append(f"{package}=={metadata[key]}")
    for key in ("optional_packages_version", "required_packages_version"):
        libs += [f"{name}=={version}" for name, version in metadata.get(key, {}).items()]
    return libs


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_canonical(name)] = version.strip()
    return pins


def _schema_file(tmp_path: Path) -> Path:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(_SPEC_SCHEMA, indent=4) + "\n", encoding="utf-8")
    return path


# --- verify_bundle.py: files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUNDLES)
def test_verify_bundle_directory_with_trained_weights(name, tmp_path):
    bundle = _copy_bundle(name, tmp_path)
    _fake_weights(bundle)
    _verify_bundle_directory(bundle)  # the empty URL is never used: models/model.pt exists


@pytest.mark.parametrize("name", BUNDLES)
def test_verify_bundle_directory_without_weights_fails_clearly(name, tmp_path):
    bundle = _copy_bundle(name, tmp_path)
    with pytest.raises(ValueError, match="Download large files in .* error"):
        _verify_bundle_directory(bundle)


@pytest.mark.parametrize("name", BUNDLES)
def test_large_files_yml_lists_the_weights(name):
    text = (_bundle(name) / "large_files.yml").read_text(encoding="utf-8")
    entries = yaml.safe_load(text)["large_files"]  # pre-commit check-yaml
    assert [e["path"] for e in entries] == ["models/model.pt"], entries
    assert all(set(e) == {"path", "url", "hash_val", "hash_type"} for e in entries), entries
    assert "no hosted weights" in text, "large_files.yml must say why its URL is empty"


@pytest.mark.parametrize("name", BUNDLES)
def test_licence_is_the_full_apache_2_text(name):
    text = (_bundle(name) / "LICENSE").read_bytes()
    assert hashlib.md5(text).hexdigest() == APACHE_2_MD5, "LICENSE is not the Model Zoo's Apache-2.0 text"
    assert text.lstrip().startswith(b"Apache License") and b"END OF TERMS AND CONDITIONS" in text


@pytest.mark.parametrize("name", BUNDLES)
def test_docs_have_readme_and_data_licence(name):
    docs = _bundle(name) / "docs"
    assert (docs / "README.md").is_file()
    data_licence = (docs / "data_license.txt").read_text(encoding="utf-8")
    for licence in BUNDLES[name]:
        assert licence in data_licence, f"{name}/docs/data_license.txt does not name {licence}"


@pytest.mark.parametrize("name", BUNDLES)
def test_version_is_in_changelog(name):
    metadata = json.loads((_bundle(name) / "configs" / "metadata.json").read_text(encoding="utf-8"))
    assert metadata["version"] in metadata["changelog"], metadata["changelog"]


# --- verify_bundle.py: metadata, shapes, TorchScript ----------------------------------------------------------


@pytest.mark.parametrize("name", BUNDLES)
def test_verify_metadata_against_the_specification(name, tmp_path):
    pytest.importorskip("jsonschema", reason="monai.bundle.verify_metadata needs jsonschema (dev extra)")
    from monai.bundle import verify_metadata

    # the schema file exists, so MONAI's download_url skips the download of the metadata's schema URL
    verify_metadata(meta_file=str(_bundle(name) / "configs" / "metadata.json"), filepath=str(_schema_file(tmp_path)))


def test_verify_metadata_rejects_a_missing_key(tmp_path):
    pytest.importorskip("jsonschema", reason="monai.bundle.verify_metadata needs jsonschema (dev extra)")
    from monai.bundle import verify_metadata

    metadata = json.loads((_bundle("ham10000_dpaat_classification") / "configs" / "metadata.json").read_text(encoding="utf-8"))
    del metadata["network_data_format"]["inputs"]["image"]["num_channels"]
    meta_file = tmp_path / "metadata.json"
    meta_file.write_text(json.dumps(metadata), encoding="utf-8")
    with pytest.raises(ValueError, match="num_channels"):
        verify_metadata(meta_file=str(meta_file), filepath=str(_schema_file(tmp_path)))


@pytest.mark.parametrize("name", BUNDLES)
def test_verify_metadata_against_the_zoo_schema(name, tmp_path):
    pytest.importorskip("jsonschema", reason="monai.bundle.verify_metadata needs jsonschema (dev extra)")
    source = os.environ.get("MONAI_DPAAT_META_SCHEMA")
    if not source:
        pytest.skip("meta_schema_20240725.json is downloaded from GitHub by MONAI (not offline): set "
                    "MONAI_DPAAT_META_SCHEMA to a downloaded copy to run this check")
    from monai.bundle import verify_metadata

    schema = tmp_path / "schema.json"
    shutil.copyfile(source, schema)
    verify_metadata(meta_file=str(_bundle(name) / "configs" / "metadata.json"), filepath=str(schema),
                    hash_val=ZOO_SCHEMA_MD5, hash_type="md5")


@pytest.mark.parametrize("name,network_name", [(n, k) for n in BUNDLES for k in NETWORKS[n]])
def test_verify_net_in_out(name, network_name):
    from monai.bundle import verify_net_in_out

    bundle = _bundle(name)
    override = {} if network_name is None else {"network_name": network_name}
    verify_net_in_out(net_id="network_def", meta_file=str(bundle / "configs" / "metadata.json"),
                      config_file=str(bundle / "configs" / "inference.json"), bundle_root=str(bundle),
                      device="cpu", **override)


@pytest.mark.parametrize("name,network_name", [(n, k) for n in BUNDLES for k in NETWORKS[n]])
def test_ckpt_export_to_torchscript(name, network_name, tmp_path):
    from monai.bundle import ckpt_export

    bundle = _copy_bundle(name, tmp_path)
    ckpt = _fake_weights(bundle, network_name)
    override = {} if network_name is None else {"network_name": network_name}
    ts_file = bundle / "models" / "verify_model.ts"
    ckpt_export(net_id="network_def", filepath=str(ts_file), ckpt_file=str(ckpt),
                meta_file=str(bundle / "configs" / "metadata.json"),
                config_file=str(bundle / "configs" / "inference.json"), bundle_root=str(bundle), **override)
    module = torch.jit.load(str(ts_file))
    assert isinstance(module, torch.jit.ScriptModule)


# --- .pre-commit-config.yaml ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [p for n in BUNDLES for p in _bundle_files(n, (".json",))],
                         ids=lambda p: str(p.relative_to(REPO / "bundles")))
def test_pretty_format_json(path):
    text = path.read_text(encoding="utf-8")
    # pre-commit-hooks pretty_format_json with --no-sort-keys --indent=4 (ensure_ascii stays on)
    expected = json.dumps(json.loads(text), indent=4, ensure_ascii=True) + "\n"
    assert text == expected, f"{path} is not formatted as pretty-format-json --indent=4 --no-sort-keys writes it"


@pytest.mark.parametrize("path", [p for n in BUNDLES for p in _bundle_files(n, (".json", ".md", ".yml", ".txt",
                                                                                   ".conf", ""))],
                         ids=lambda p: str(p.relative_to(REPO / "bundles")))
def test_end_of_file_and_whitespace(path):
    data = path.read_bytes()
    assert data.endswith(b"\n") and not data.endswith(b"\n\n"), f"{path}: end-of-file-fixer would change it"
    assert b"\r" not in data, f"{path}: mixed-line-ending"
    trailing = [i + 1 for i, line in enumerate(data.split(b"\n")) if line != line.rstrip()]
    assert not trailing, f"{path}: trailing whitespace on lines {trailing}"


# --- get_bundle_requirements.py -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUNDLES)
def test_requirements_are_pypi_packages_at_tested_versions(name):
    metadata = json.loads((_bundle(name) / "configs" / "metadata.json").read_text(encoding="utf-8"))
    requirements = _requirements(metadata)
    assert any(r.startswith("monai==") for r in requirements) and any(r.startswith("torch==") for r in requirements)
    pins = _constraints()
    for requirement in requirements:
        package, version = requirement.split("==")
        assert _canonical(package) != "monai-dpaat", f"{name}: monai-dpaat is not on PyPI ({requirement})"
        # constraints.txt holds exactly what CI installs from PyPI: a package outside it is not known to exist
        assert pins.get(_canonical(package)) == version, f"{name}: {requirement} is not a pin of constraints.txt"
    readme = (_bundle(name) / "docs" / "README.md").read_text(encoding="utf-8")
    assert "Model Zoo CI" in readme and "not on PyPI" in readme, f"{name}/docs/README.md: how to get monai_dpaat"
