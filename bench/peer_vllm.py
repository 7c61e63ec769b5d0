"""vLLM's CPU build on the `bench.engine --peers` workload, run in vLLM's own venv.

    <vllm-venv>/bin/python bench/peer_vllm.py MODEL_DIR WORKLOAD_JSON OUT_JSON

Imports nothing of ours (vLLM's venv has its own torch). The offline `LLM` in float32,
greedy, EOS ignored, token ids in (no tokenizer), every request added at t=0, then
`llm_engine.step()` until done, each step's new tokens stamped as they come back. The
parent sets VLLM_CPU_OMP_THREADS_BIND (the same cores as ours) and VLLM_CPU_KVCACHE_SPACE.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def serve(engine: Any, prompts: list[list[int]], params: Any) -> dict[str, Any]:
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        engine.add_request(f"r{i}-{start}", {"prompt_token_ids": prompt}, params)
    stamps: dict[str, list[float]] = {}
    tokens: dict[str, list[int]] = {}
    while engine.has_unfinished_requests():
        outputs = engine.step()
        now = time.perf_counter() - start
        for output in outputs:
            ids = list(output.outputs[0].token_ids)  # cumulative
            seen = tokens.setdefault(output.request_id, [])
            stamps.setdefault(output.request_id, []).extend([now] * (len(ids) - len(seen)))
            seen[:] = ids
    ordered = sorted(stamps, key=lambda rid: int(rid.split("-")[0][1:]))
    return {
        "wall_s": time.perf_counter() - start,
        "stamps_s": [stamps[rid] for rid in ordered],
        "first_tokens": tokens[ordered[0]],
    }


def main() -> None:
    model_dir, workload_path, out_path = sys.argv[1:4]
    workload = json.loads(open(workload_path).read())  # noqa: SIM115 (a one-shot read)
    from vllm import LLM, SamplingParams

    prompts = workload["prompts"]
    llm = LLM(
        model=model_dir,
        dtype="float32",
        max_model_len=workload["max_model_len"],
        max_num_seqs=len(prompts),
        skip_tokenizer_init=True,
        seed=0,
    )
    params = SamplingParams(
        temperature=0.0, max_tokens=workload["new_tokens"], ignore_eos=True, detokenize=False
    )
    warm = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True, detokenize=False)
    serve(llm.llm_engine, [prompts[0][:16]], warm)
    result = serve(llm.llm_engine, prompts, params)
    with open(out_path, "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
