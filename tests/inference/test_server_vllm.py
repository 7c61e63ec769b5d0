"""`api.inference_server` flags per engine (serving on real vLLM is tested in `tests/vllm/`)."""

from __future__ import annotations

import pytest

from api.inference_server import engine_options, parse_args
from inference.vllm_engine import VllmEngineOptions


def test_engine_options_follow_the_engine() -> None:
    torch_args = parse_args(["--num-kv-blocks", "64", "--max-model-len", "512"])
    assert engine_options(torch_args) == {"num_kv_blocks": 64, "max_model_len": 512}
    with pytest.raises(SystemExit, match="tensor-parallel-size"):
        engine_options(parse_args(["--tensor-parallel-size", "4"]))  # torch has no TP
    with pytest.raises(SystemExit, match="num-kv-blocks"):
        engine_options(parse_args(["--engine", "vllm", "--num-kv-blocks", "64"]))
    extra = parse_args(["--engine", "vllm", "--option", "enforce_eager=true", "--option", "x=1"])
    assert engine_options(extra) == {"enforce_eager": True, "x": 1}


def test_vllm_flags_reach_vllms_engine_arguments() -> None:
    args = parse_args(
        ["--engine", "vllm", "--tensor-parallel-size", "2", "--distributed-executor-backend",
         "mp", "--enforce-eager", "--dtype", "float32", "--max-num-seqs", "8",
         "--option", "max_logprobs=5"]
    )  # fmt: skip
    options = VllmEngineOptions.of(engine_options(args))
    engine_args = options.engine_args("/models/m", "m")
    assert (engine_args["tensor_parallel_size"], engine_args["max_num_seqs"]) == (2, 8)
    assert engine_args["distributed_executor_backend"] == "mp"
    assert (engine_args["enforce_eager"], engine_args["dtype"]) == (True, "float32")
    assert engine_args["max_logprobs"] == 5
