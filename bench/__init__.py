"""Benchmarks: each prints a table and writes JSON under `bench/results/`.

- `engine`:          our engine against transformers on one workload; `--peers`: against vLLM
                     CPU and llama.cpp on SmolLM2-135M (`engine_peers`).
- `engine_peers`:    the `--peers` run: one workload, each engine in turn, the issue #16 table.
- `peer_models`:     the model files the peers read (the packaged Q4_1 GGUF, fetched if
                     missing, dequantized to float32: a HF directory and a GGUF).
- `peer_vllm`:       vLLM's side, run in vLLM's own venv.
- `peer_llama_server`: llama.cpp's `llama-server`, started and driven over HTTP.
- `peer_llama_cpp`:  llama-cpp-python at batch 1, run in its own venv.
- `peer_report`:     the rows, the table and the targets.
- `peer_profile`:    where our step time goes during a run.
- `engine_profile`:  one decode step of ours split into its parts at chosen batch sizes
                     (wall time, or instruction counts under callgrind).
- `gateway`:         the gateway's cost per request against a mock upstream and a bare
                     forwarder, per route and worker count, with PostgreSQL's and Redis's CPU.
- `gateway_load`:    what `gateway` drives and reads: uvicorn servers, wrk, CPU meters.
- `gateway_profile`: a py-spy profile of one gateway worker under that load (`--pin`).
- `gateway_servers`: the mock upstream and the bare forwarder that `gateway` measures.
- `gateway_setup`:   the gateway under `gateway`: config, database, key, switches.
- `ledger`:          the ledger's write path alone (group commit on PostgreSQL).
- `reports`:         billing reports on a large ledger.
- `store_ops`:       PostgreSQL writes and Redis commands per request through the gateway.
- `vllm_gateway`:    vLLM (any TP size, GPU or CPU) direct and through the gateway: tok/s, TTFT.
- `vllm_server`:     vLLM from this checkout (our server on it, or its own) in `make vllm`'s env.
"""
