"""llama-cpp-python at batch 1 on the `bench.engine --peers` prompt, run in its own venv.

    <llama-cpp-venv>/bin/python bench/peer_llama_cpp.py MODEL_GGUF WORKLOAD_JSON OUT_JSON THREADS

Imports nothing of ours. One request: the workload's batch-1 prompt as token ids, greedy
(top_k 1), `new_tokens` tokens, each stamped as `generate` yields it.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    model, workload_path, out_path, threads = sys.argv[1:5]
    workload = json.loads(open(workload_path).read())  # noqa: SIM115 (a one-shot read)
    from llama_cpp import Llama

    prompt, new_tokens = workload["batch1_prompt"], workload["new_tokens"]
    llm = Llama(
        model_path=model,
        n_ctx=workload["max_model_len"],
        n_batch=512,
        n_threads=int(threads),
        n_threads_batch=int(threads),
        verbose=False,
    )
    runs = []
    for count in (4, new_tokens):  # a warm-up, then the measured request
        llm.reset()
        start, stamps, tokens = time.perf_counter(), [], []
        for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            stamps.append(time.perf_counter() - start)
            tokens.append(int(token))
            if len(tokens) == count:
                break
        runs.append({"stamps_s": stamps, "tokens": tokens})
    with open(out_path, "w") as out:
        json.dump(runs[-1], out)


if __name__ == "__main__":
    main()
