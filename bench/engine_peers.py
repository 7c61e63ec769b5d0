"""`python -m bench.engine --peers`: ours against vLLM's CPU build and llama.cpp, one run.

The engines a user would pick instead of ours, on SmolLM2-135M-Instruct (its Q4_1 GGUF's
weights dequantized to float32 for every row, see `bench.peer_models`), greedy, EOS ignored,
token ids in, `--threads` threads each, one engine at a time:
  ours              LLMEngine in this process (and again with bfloat16 weights);
  vLLM CPU          offline `LLM` in ~/.cache/sluicegate/vllm-venv (`bench/peer_vllm.py`),
                    VLLM_CPU_OMP_THREADS_BIND on the same cores;
  llama-server      the F32 GGUF, one slot per request (`bench.peer_llama_server`);
  llama-cpp-python  batch 1 (`bench/peer_llama_cpp.py`, its own venv);
  transformers      batch 1.
Workload (dumped to bench/results/peers-workload.json; every engine reads that file):
`--requests` prompts of 64-256 random token ids, `--new-tokens` each, all submitted at t=0;
and the first prompt alone, for per-token latency at batch 1. A peer that is not installed
is skipped, and the command that installs it is printed. Writes bench/results/engine-peers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from bench import peer_llama_server
from bench.engine import hf_generate, read_bandwidth, run_ours, workload
from bench.peer_models import CACHE, PeerModels, prepare
from bench.peer_profile import profiled
from bench.peer_report import Row, from_stamps, print_report
from inference.engine.llm_engine import EngineOptions, LLMEngine

RESULTS = Path(__file__).parent / "results"
HERE = Path(__file__).parent
VLLM_PYTHON = CACHE / "vllm-venv" / "bin" / "python"
LLAMA_CPP_PYTHON = CACHE / "llama-cpp-venv" / "bin" / "python"
INSTALL_VLLM = "make vllm (vLLM's CPU build into ~/.cache/sluicegate/vllm-venv)"
INSTALL_LLAMA_CPP = "make llama-cpp-python"


def dump_workload(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    prompts = workload(args.requests, 49152)
    data = {
        "prompts": prompts,
        "new_tokens": args.new_tokens,
        "max_model_len": 256 + args.new_tokens,
        "batch1_prompt": prompts[0],
    }
    path = RESULTS / "peers-workload.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return data, path


def _engine(
    model: Path, dtype: str, requests: int, data: dict[str, Any], threads: int
) -> LLMEngine:
    options = EngineOptions(
        max_num_seqs=requests, max_model_len=data["max_model_len"], num_threads=threads,
        dtype=dtype,
    )  # fmt: skip
    return LLMEngine(model, options)


def run_ours_rows(
    models: PeerModels, data: dict[str, Any], args: argparse.Namespace, console: Console
) -> tuple[list[Row], dict[str, Any]]:
    """Ours in float32 (batched, with the step profile, then batch 1) and in bfloat16."""
    prompts, new = data["prompts"], data["new_tokens"]
    console.log("ours: float32")
    engine = _engine(models.hf_dir, "float32", len(prompts), data, args.threads)
    run_ours(engine, [prompts[1][:16]], 4)  # warm-up
    with profiled(engine) as profile:
        batched = run_ours(engine, prompts, new)
    batch1 = run_ours(engine, [data["batch1_prompt"]], new)
    rows = [Row.from_run("ours", batched, batch1)]
    del engine
    if args.bf16:
        console.log("ours: bfloat16")
        engine = _engine(models.hf_dir, "bfloat16", len(prompts), data, args.threads)
        run_ours(engine, [prompts[1][:16]], 4)
        rows.append(Row.from_run("ours bf16", run_ours(engine, prompts, new), None))
        del engine
    return rows, profile.summary(batched.wall_s)


def run_vllm(
    models: PeerModels, workload_path: Path, args: argparse.Namespace, console: Console
) -> Row:
    if not VLLM_PYTHON.exists():
        return Row.skipped("vLLM CPU", INSTALL_VLLM)
    console.log("vLLM CPU")
    cores = f"0-{args.threads - 1}"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "PYTHONPATH")}
    env |= {"VLLM_CPU_OMP_THREADS_BIND": cores, "VLLM_CPU_KVCACHE_SPACE": "2"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "vllm.json"
        command = [str(VLLM_PYTHON), str(HERE / "peer_vllm.py"), str(models.hf_dir)]
        command.append(str(workload_path))
        subprocess.run([*command, str(out)], env=env, check=True, timeout=7200)
        result = json.loads(out.read_text())
    return from_stamps("vLLM CPU", result, note=f"VLLM_CPU_OMP_THREADS_BIND={cores}")


def run_llama_server(
    models: PeerModels, data: dict[str, Any], args: argparse.Namespace, console: Console
) -> Row:
    if not peer_llama_server.BINARY.exists():
        return Row.skipped("llama-server", peer_llama_server.INSTALL)
    console.log("llama-server")
    result = peer_llama_server.run(
        models.f32_gguf(), data["prompts"], data["new_tokens"],
        context=data["max_model_len"], threads=args.threads,
    )  # fmt: skip
    return from_stamps("llama-server", result, note=f"F32 GGUF, {len(data['prompts'])} slots")


def run_llama_cpp_python(
    models: PeerModels, workload_path: Path, args: argparse.Namespace, console: Console
) -> Row:
    if not LLAMA_CPP_PYTHON.exists():
        return Row.skipped("llama-cpp-python", INSTALL_LLAMA_CPP)
    console.log("llama-cpp-python (batch 1)")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "PYTHONPATH")}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "llama.json"
        script = str(HERE / "peer_llama_cpp.py")
        command = [str(LLAMA_CPP_PYTHON), script, str(models.f32_gguf()), str(workload_path)]
        command.append(str(out))
        subprocess.run([*command, str(args.threads)], env=env, check=True, timeout=3600)
        result = json.loads(out.read_text())
    return Row.batch1_only("llama-cpp-python", result["stamps_s"], result["tokens"], "F32 GGUF")


def run_transformers(models: PeerModels, data: dict[str, Any], console: Console) -> Row:
    from transformers import AutoModelForCausalLM

    console.log("transformers (batch 1)")
    model = AutoModelForCausalLM.from_pretrained(models.hf_dir, dtype=torch.float32).eval()
    hf_generate(model, [data["batch1_prompt"][:8]], 2)  # warm-up
    start, stamps = hf_generate(model, [data["batch1_prompt"]], data["new_tokens"])
    return Row.batch1_only("transformers", [s - start for s in stamps], [], "generate")


def main(args: argparse.Namespace) -> None:
    console = Console()
    models = prepare(say=console.log)
    torch.set_num_threads(args.threads)
    data, workload_path = dump_workload(args)
    console.log(
        f"workload: {len(data['prompts'])} prompts, {sum(map(len, data['prompts']))} tokens"
    )
    load_before = os.getloadavg()
    bandwidth = read_bandwidth()
    ours, profile = run_ours_rows(models, data, args, console)
    rows = [*ours, run_vllm(models, workload_path, args, console)]
    rows += [
        run_llama_server(models, data, args, console),
        run_llama_cpp_python(models, workload_path, args, console),
    ]
    rows.append(run_transformers(models, data, console))
    weight_bytes = _weight_bytes(models.hf_dir)
    report = {
        "command": "python -m bench.engine " + " ".join(sys.argv[1:]),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "threads": args.threads,
        "workload": {
            "requests": len(data["prompts"]),
            "prompt_tokens": sum(map(len, data["prompts"])),
            "new_tokens": data["new_tokens"],
        },
        "read_bandwidth_gb_s": round(bandwidth / 1e9, 2),
        "weight_bytes": weight_bytes,
        "weight_streaming_ms_per_token": round(weight_bytes / bandwidth * 1000, 2),
        "rows": [row.summary() for row in rows],
        "ours_profile": profile,
    }
    print_report(report, console)
    (RESULTS / "engine-peers.json").write_text(json.dumps(report, indent=2))
    console.print(f"wrote {RESULTS / 'engine-peers.json'}")


def _weight_bytes(model: Path) -> int:
    """Bytes a batch-1 decode step must read: every matrix once (the tied table as the head)."""
    from inference.models.config import ModelConfig

    config = ModelConfig.from_dir(model)
    return int(config.num_params * 4)
