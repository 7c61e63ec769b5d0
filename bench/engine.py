"""Our engine against transformers `generate`, on a GPT-2-small-shaped model and the tiny one.

    python -m bench.engine [--quick] [--requests 64] [--new-tokens 128] [--models gpt2-small,tiny]
        [--torch-attention] [--bf16]
    python -m bench.engine --peers   # against vLLM CPU and llama.cpp: see bench/engine_peers.py

Workload: `--requests` prompts of 64-256 random tokens, `--new-tokens` new tokens each,
greedy, EOS ignored, all submitted together at t=0. Rows:
  (a) ours        LLMEngine, continuous batching over the paged KV cache;
  (b) hf-serial   transformers `generate`, one request at a time;
  (c) hf-static   transformers `generate`, left-padded static batches of 16;
  (a'')           with --torch-attention: ours with the pure-torch decode attention (gather +
                  SDPA) instead of the C kernel, side by side in the same run.
(b) and (c) time a subset (`--hf-serial`, `--hf-batches`) and extrapolate the rest of the
queue from the measured service times (marked "extrapolated" in the table and JSON).
Batch-1 decode tok/s (one 128-token prompt) is measured for (a) and (b). Ceilings, measured
in the same run: compute = matmul FLOP/s / model FLOPs per decode token; weight streaming =
memory read bandwidth / weight bytes (batch-1 decode). Writes bench/results/engine.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from transformers import (
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
)

from inference.engine.llm_engine import EngineOptions, LLMEngine
from inference.models.config import ModelConfig
from inference.params import SamplingParams
from inference.tiny.build import ensure_tiny_model

RESULTS = Path(__file__).parent / "results" / "engine.json"
CACHE = Path(tempfile.gettempdir()) / "sluicegate-bench"
HF_BATCH = 16


@dataclass
class Run:
    name: str
    wall_s: float
    output_tokens: int
    ttft_s: list[float] = field(repr=False)
    itl_s: list[float] = field(repr=False)
    note: str = ""
    first_tokens: list[int] = field(default_factory=list, repr=False)  # of the first request

    @property
    def tok_s(self) -> float:
        return self.output_tokens / self.wall_s

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "wall_s": round(self.wall_s, 3),
            "output_tokens": self.output_tokens,
            "output_tok_s": round(self.tok_s, 2),
            "ttft_p50_s": _pct(self.ttft_s, 50),
            "ttft_p99_s": _pct(self.ttft_s, 99),
            "itl_p50_ms": _pct(self.itl_s, 50, 1000),
            "itl_p99_ms": _pct(self.itl_s, 99, 1000),
            "note": self.note,
        }


def _pct(values: list[float], q: float, scale: float = 1.0) -> float:
    return round(float(np.percentile(values, q)) * scale, 4) if values else float("nan")


# ---- models and workload -------------------------------------------------------------------


def model_dir(name: str) -> Path:
    if name == "tiny":
        return ensure_tiny_model(CACHE / "tiny-gpt2", "gpt2")
    if name != "gpt2-small":
        raise ValueError(f"unknown benchmark model {name}")
    path = CACHE / "gpt2-small-random"
    if not (path / "model.safetensors").exists():
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config()).save_pretrained(path, safe_serialization=True)
    return path


def workload(requests: int, vocab: int, seed: int = 0) -> list[list[int]]:
    rng = torch.Generator().manual_seed(seed)
    lengths = torch.randint(64, 257, (requests,), generator=rng).tolist()
    return [torch.randint(0, vocab, (n,), generator=rng).tolist() for n in lengths]


# ---- (a) ours ------------------------------------------------------------------------------


def run_ours(engine: LLMEngine, prompts: list[list[int]], new_tokens: int) -> Run:
    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        engine.add_request(f"b{i}-{start}", prompt, params)
    times: dict[str, list[float]] = {}
    first: list[int] = []
    while engine.has_unfinished():
        deltas = engine.step()
        now = time.perf_counter() - start
        for delta in deltas:
            times.setdefault(delta.request_id, []).append(now)
            if delta.request_id == f"b0-{start}":
                first.extend(delta.token_ids)
    wall = time.perf_counter() - start
    return Run(
        "(a) ours",
        wall,
        sum(len(t) for t in times.values()),
        [t[0] for t in times.values()],
        [b - a for t in times.values() for a, b in itertools.pairwise(t)],
        first_tokens=first,
    )


def run_variant(
    engine: LLMEngine, prompts: list[list[int]], new_tokens: int, label: str, note: str
) -> Run:
    """Ours again with other engine options: a side-by-side row of the same run."""
    run_ours(engine, workload(2, engine.config.vocab_size, seed=1), 4)  # warm-up
    run = run_ours(engine, prompts, new_tokens)
    run.name, run.note = label, note
    return run


def ours_batch1_decode(engine: LLMEngine, prompt: list[int], new_tokens: int) -> float:
    run = run_ours(engine, [prompt], new_tokens)
    return 1.0 / float(np.mean(run.itl_s))


# ---- (b), (c) transformers -----------------------------------------------------------------


class _StepClock(LogitsProcessor):
    """Called once per generation step, right after the forward pass: a token timestamp."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return scores


def hf_generate(
    model: PreTrainedModel, prompts: list[list[int]], new_tokens: int
) -> tuple[float, list[float]]:
    """Left-padded batch generate; returns (start time, per-step timestamps)."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    config = GenerationConfig(
        do_sample=False, max_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0
    )
    model.generation_config.eos_token_id = None  # else it overrides ours: EOS is ignored
    clock = _StepClock()
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(  # type: ignore[operator]
            ids,
            attention_mask=mask,
            generation_config=config,
            logits_processor=LogitsProcessorList([clock]),
        )
    return start, clock.times


def run_hf_queue(
    model: PreTrainedModel, prompts: list[list[int]], new_tokens: int, batch: int, timed: int
) -> Run:
    """Serve `prompts` in order, `batch` at a time; time `timed` batches, extrapolate the rest."""
    batches = [prompts[i : i + batch] for i in range(0, len(prompts), batch)]
    services, first_token, itl = [], [], []
    for group in batches[:timed]:
        start, stamps = hf_generate(model, group, new_tokens)
        services.append(stamps[-1] - start)
        first_token.append(stamps[0] - start)
        itl += [b - a for a, b in itertools.pairwise(stamps)] * len(group)
    mean_service = float(np.mean(services))
    ttft, queue_start = [], 0.0
    for i, group in enumerate(batches):
        own = first_token[i] if i < timed else float(np.mean(first_token))
        ttft += [queue_start + own] * len(group)
        queue_start += services[i] if i < timed else mean_service
    name = "(b) hf-serial" if batch == 1 else f"(c) hf-static x{batch}"
    note = "" if timed >= len(batches) else f"timed {timed}/{len(batches)} batches, extrapolated"
    return Run(name, queue_start, len(prompts) * new_tokens, ttft, itl, note)


def hf_batch1_decode(model: PreTrainedModel, prompt: list[int], new_tokens: int) -> float:
    _, stamps = hf_generate(model, [prompt], new_tokens)
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


# ---- ceilings ------------------------------------------------------------------------------


def _timed(fn: Callable[[], object], seconds: float = 1.5) -> float:
    fn()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return (time.perf_counter() - start) / count


def matmul_flops(config: ModelConfig) -> float:
    """Best fp32 matmul FLOP/s over the model's own layer shapes at 512 rows."""
    d, f = config.hidden_size, config.intermediate_size
    x = torch.randn(512, d)
    best = 0.0
    for out_features in (3 * d, f):
        weight = torch.randn(out_features, d)
        seconds = _timed(lambda: F.linear(x, weight))  # noqa: B023 (called right here)
        best = max(best, 2 * 512 * d * out_features / seconds)
    return best


def read_bandwidth() -> float:
    """Bytes/s reading 1 GiB of fp32 (bigger than any cache): the better of a
    matrix-vector product over it (batch-1 decode's access pattern) and a plain sum."""
    weights = torch.ones(1 << 18, 1 << 10)
    x = torch.ones(1, 1 << 10)
    gemv = _timed(lambda: F.linear(x, weights), 2.0)
    total = _timed(weights.sum, 2.0)
    return weights.numel() * 4 / min(gemv, total)


# ---- one model -----------------------------------------------------------------------------


def bench_model(name: str, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    path = model_dir(name)
    config = ModelConfig.from_dir(path)
    prompts = workload(args.requests, config.vocab_size)
    options = EngineOptions(
        max_num_seqs=args.requests,
        max_num_batched_tokens=args.max_batched_tokens,
        max_model_len=min(config.max_position_embeddings, 256 + args.new_tokens),
        num_threads=args.threads,
    )
    engine = LLMEngine(path, options)
    run_ours(engine, workload(2, config.vocab_size, seed=1), 4)  # warm-up
    console.log(f"{name}: ours")
    ours = run_ours(engine, prompts, args.new_tokens)
    ours.note = "C decode attention" if engine.runner.kernel else "torch attention (no compiler)"
    b1_prompt = workload(1, config.vocab_size, seed=2)[0][:128]
    ours_b1 = ours_batch1_decode(engine, b1_prompt, args.new_tokens)
    del engine
    variants = [  # (asked for, row, note, engine options)
        (args.torch_attention, "(a'') ours, torch attn", "gather + SDPA decode attention",
         replace(options, attention="torch")),
        (args.bf16, "(a') ours bf16", "bfloat16 weights and KV: not comparable",
         replace(options, dtype="bfloat16")),
    ]  # fmt: skip
    extra = []
    for wanted, label, note, variant_options in variants:
        if wanted:
            console.log(f"{name}: {label}")
            variant = LLMEngine(path, variant_options)
            extra.append(run_variant(variant, prompts, args.new_tokens, label, note))
            del variant
    model = GPT2LMHeadModel.from_pretrained(path).eval()
    hf_generate(model, [b1_prompt[:8]], 2)  # warm-up
    console.log(f"{name}: transformers one at a time")
    serial = run_hf_queue(model, prompts, args.new_tokens, 1, args.hf_serial)
    hf_b1 = hf_batch1_decode(model, b1_prompt, args.new_tokens)
    console.log(f"{name}: transformers static batches")
    static = run_hf_queue(model, prompts, args.new_tokens, HF_BATCH, args.hf_batches)
    del model
    result = _model_result(name, config, prompts, args, [ours, serial, static], ours_b1, hf_b1)
    result["runs"] += [r.summary() for r in extra]
    return result


def _model_result(
    name: str,
    config: ModelConfig,
    prompts: list[list[int]],
    args: argparse.Namespace,
    runs: list[Run],
    ours_b1: float,
    hf_b1: float,
) -> dict[str, Any]:
    ours, serial, static = runs
    flops_s, bandwidth = matmul_flops(config), read_bandwidth()
    mean_context = float(np.mean([len(p) for p in prompts])) + args.new_tokens / 2
    decode_flops = config.flops_per_token(int(mean_context))
    prompt_flops = sum(config.flops_per_token(len(p) // 2, with_head=False) for p in prompts)
    compute_ceiling = flops_s / decode_flops
    weight_bytes = config.num_params * 4
    streaming_ceiling = bandwidth / weight_bytes
    useful = prompt_flops + ours.output_tokens * decode_flops
    return {
        "model": name,
        "params": config.num_params,
        "runs": [r.summary() for r in runs],
        "speedup_vs_serial": round(ours.tok_s / serial.tok_s, 2),
        "speedup_vs_static": round(ours.tok_s / static.tok_s, 2),
        "matmul_gflop_s": round(flops_s / 1e9, 1),
        "decode_gflop_per_token": round(decode_flops / 1e9, 4),
        "compute_ceiling_tok_s": round(compute_ceiling, 1),
        "ours_fraction_of_compute_ceiling": round(ours.tok_s / compute_ceiling, 3),
        "ours_model_flops_utilisation_incl_prompts": round(useful / ours.wall_s / flops_s, 3),
        "read_bandwidth_gb_s": round(bandwidth / 1e9, 1),
        "weight_bytes": weight_bytes,
        "weight_streaming_ceiling_tok_s": round(streaming_ceiling, 1),
        "batch1_decode_tok_s": {"ours": round(ours_b1, 1), "hf": round(hf_b1, 1)},
        "batch1_speedup": round(ours_b1 / hf_b1, 2),
        "ours_batch1_fraction_of_streaming_ceiling": round(ours_b1 / streaming_ceiling, 3),
    }


# ---- output --------------------------------------------------------------------------------


def print_tables(results: list[dict[str, Any]], console: Console) -> None:
    for r in results:
        table = Table(title=f"{r['model']} ({r['params'] / 1e6:.1f}M params, fp32)")
        for column in ("run", "out tok/s", "TTFT p50 s", "TTFT p99 s", "ITL p50 ms", "ITL p99 ms"):
            table.add_column(column, justify="left" if column == "run" else "right")
        table.add_column("note")
        for run in r["runs"]:
            table.add_row(
                run["name"],
                f"{run['output_tok_s']:.1f}",
                f"{run['ttft_p50_s']:.2f}",
                f"{run['ttft_p99_s']:.2f}",
                f"{run['itl_p50_ms']:.1f}",
                f"{run['itl_p99_ms']:.1f}",
                run["note"],
            )
        console.print(table)
        b1 = r["batch1_decode_tok_s"]
        console.print(
            f"  ours/serial {r['speedup_vs_serial']}x, ours/static {r['speedup_vs_static']}x; "
            f"compute ceiling {r['compute_ceiling_tok_s']} tok/s "
            f"({r['matmul_gflop_s']} GFLOP/s / {r['decode_gflop_per_token']} GFLOP/token), "
            f"ours {r['ours_fraction_of_compute_ceiling']:.0%} of it "
            f"(MFU incl. prompt tokens {r['ours_model_flops_utilisation_incl_prompts']:.0%})\n"
            f"  batch-1 decode: ours {b1['ours']} tok/s, transformers {b1['hf']} tok/s "
            f"({r['batch1_speedup']}x); weight-streaming ceiling "
            f"{r['weight_streaming_ceiling_tok_s']} tok/s ({r['read_bandwidth_gb_s']} GB/s), "
            f"ours {r['ours_batch1_fraction_of_streaming_ceiling']:.0%} of it\n"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--models", default="gpt2-small,tiny")
    parser.add_argument("--max-batched-tokens", type=int, default=512)
    parser.add_argument("--hf-serial", type=int, default=4, help="requests timed for (b)")
    parser.add_argument("--hf-batches", type=int, default=4, help="batches timed for (c)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--bf16", action="store_true", help="also run ours in bfloat16")
    parser.add_argument(
        "--torch-attention",
        action="store_true",
        help="also run ours with the pure-torch decode attention (gather + SDPA)",
    )
    parser.add_argument(
        "--omp-wait-policy", default="PASSIVE", help="OMP_WAIT_POLICY unless set ('' keeps)"
    )
    parser.add_argument("--quick", action="store_true", help="16 requests, 32 new tokens")
    parser.add_argument(
        "--peers",
        action="store_true",
        help="ours against vLLM CPU, llama-server and llama-cpp-python on SmolLM2-135M "
        "(32 requests and 2 threads unless given; see bench/engine_peers.py)",
    )
    args = parser.parse_args(argv)
    if args.peers:
        given = set(argv if argv is not None else sys.argv[1:])
        if "--requests" not in given:
            args.requests = 32
        if "--threads" not in given:
            args.threads = 2
        args.bf16 = True
    if args.quick:
        args.requests, args.new_tokens, args.hf_serial, args.hf_batches = 16, 32, 2, 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if os.environ.get("OMP_WAIT_POLICY") is None and args.omp_wait_policy:
        # libgomp reads this once, when torch loads; on a shared CPU its default (spinning
        # threads) makes every parallel op wait for a descheduled peer. Same for both sides.
        env = {**os.environ, "OMP_WAIT_POLICY": args.omp_wait_policy}
        os.execve(sys.executable, [sys.executable, "-m", "bench.engine", *sys.argv[1:]], env)
    if args.peers:
        from bench import engine_peers  # its peers' modules are only needed here

        engine_peers.main(args)
        return
    torch.set_num_threads(args.threads)
    console = Console()
    results = [bench_model(name, args, console) for name in args.models.split(",")]
    print_tables(results, console)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python -m bench.engine " + " ".join(f"{k}={v}" for k, v in vars(args).items()),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor(),
            "torch": torch.__version__,
        },
        "load_average": os.getloadavg(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    RESULTS.write_text(json.dumps({**meta, "results": results}, indent=2))
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
