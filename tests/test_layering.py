"""The floor plan holds: `lint-imports` checks the contracts in pyproject.toml.

Floors (top to bottom): bench > cli > api | migrations > backends | auth | billing >
inference > core. Besides the floors: only `api/` imports an HTTP server framework,
`inference/` imports no HTTP library, the scheduler and KV cache import no torch, and no
package has an import cycle between its modules.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _config() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        config: dict[str, object] = tomllib.load(file)["tool"]["importlinter"]
    return config


def test_every_contract_is_kept() -> None:
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--no-logo"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_package_is_on_a_floor() -> None:
    """A new top-level package must join the floor plan, or it would escape every contract."""
    packages = {
        path.parent.name for path in ROOT.glob("*/__init__.py") if path.parent.name not in {"tests"}
    }
    assert set(_config()["root_packages"]) == packages  # type: ignore[arg-type]


def test_every_package_opens_with_a_map() -> None:
    """Each package's `__init__.py` starts with a docstring naming its modules."""
    missing = []
    for init in ROOT.glob("[!.]*/**/__init__.py"):
        if init.parts[len(ROOT.parts)] in {"tests", "build"} or init.parent.name == "versions":
            continue
        modules = {p.stem for p in init.parent.glob("*.py") if p.stem != "__init__"}
        modules |= {p.name for p in init.parent.iterdir() if (p / "__init__.py").exists()}
        text = init.read_text()
        if modules and not all(f"`{name}" in text for name in modules if name != "__main__"):
            missing.append(str(init.relative_to(ROOT)))
    assert not missing, f"package maps that miss a module: {missing}"
