"""`SamplingParams` is validated when built and again when a request enters the engine.

A `top_k` of 2**63 once reached the sampler's int64 tensor and failed the engine step for
every request in the batch (issue #11, item 1): no value that passes here can overflow
anything downstream (torch tensors, vLLM's int32 fields, the JSON to a remote server).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from inference import LLM, SamplingParams
from inference.vllm_engine import to_vllm_sampling_params

INT32_MAX = 2**31 - 1

BAD: list[tuple[str, Any]] = [
    ("top_k", 2**63),
    ("top_k", INT32_MAX + 1),
    ("top_k", -2),
    ("top_k", 1.5),
    ("top_k", True),
    ("n", 2**40),
    ("n", True),
    ("max_tokens", 2**63),
    ("max_tokens", 3.0),
    ("temperature", math.nan),
    ("temperature", "0.5"),
    ("top_p", math.nan),
    ("top_p", math.inf),
    ("presence_penalty", math.nan),
    ("frequency_penalty", -math.inf),
    ("seed", 2**64),
    ("seed", 1.0),
    ("logit_bias", {2**63: 1.0}),
    ("logit_bias", {5: math.nan}),
    ("stop_token_ids", [2**63]),
    ("logprobs", True),
    ("prompt_logprobs", 2**70),
]


@pytest.mark.parametrize(("field", "value"), BAD, ids=[f"{f}={v!r}"[:40] for f, v in BAD])
def test_values_that_could_overflow_downstream_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        SamplingParams(**{field: value})


def test_the_bounds_themselves_are_accepted() -> None:
    params = SamplingParams(
        top_k=INT32_MAX,
        max_tokens=INT32_MAX,
        seed=-(2**63),
        logit_bias={INT32_MAX: -100.0},
        stop_token_ids=[INT32_MAX],
        top_p=1,
        temperature=0,
    )
    assert params.top_k == INT32_MAX


@pytest.fixture(scope="module")
def llm(tiny_model_dir: Path) -> LLM:
    return LLM(str(tiny_model_dir), block_size=8, num_kv_blocks=64, max_num_batched_tokens=64)


def test_the_engine_validates_params_again_on_entry(llm: LLM) -> None:
    """Params changed after they were built (they are a plain dataclass) are caught at the door."""
    params = SamplingParams(max_tokens=2, top_k=5)
    params.top_k = 2**63
    with pytest.raises(ValueError, match=r"^top_k"):
        llm.engine.add_request("tampered", [5, 6, 7], params)
    assert not llm.engine.has_unfinished()
    params.top_k = 5
    llm.engine.add_request("repaired", [5, 6, 7], params)
    while llm.engine.has_unfinished():
        llm.engine.step()


def test_the_vllm_adapter_validates_params_again_before_mapping_them() -> None:
    params = SamplingParams(max_tokens=2)
    params.top_k = 2**63  # vLLM would put it in an int tensor shared by the whole batch
    with pytest.raises(ValueError, match=r"^top_k"):
        to_vllm_sampling_params(None, params)  # type: ignore[arg-type]
