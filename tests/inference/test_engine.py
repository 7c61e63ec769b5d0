"""Engine behaviour on the built-in tiny model: text, stops, seeds, aborts, limits, options."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ContextLengthExceeded
from inference import LLM, SamplingParams
from inference.engine.llm_engine import EngineOptions, LLMEngine
from inference.outputs import GenerationDelta

EOS = 0  # <|endoftext|> in the tiny checkpoints


@pytest.fixture(scope="module")
def llm(tiny_model_dir: Path) -> LLM:
    return LLM(str(tiny_model_dir), block_size=8, num_kv_blocks=256, max_num_batched_tokens=64)


def run(engine: LLMEngine) -> list[GenerationDelta]:
    deltas = []
    while engine.has_unfinished():
        deltas.extend(engine.step())
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
    return deltas


def greedy(max_tokens: int = 24, **kwargs: object) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, **kwargs)  # type: ignore[arg-type]


def test_text_matches_the_tokens(llm: LLM) -> None:
    (out,) = llm.generate("The gate opens at dawn.", greedy())
    completion = out.outputs[0]
    assert llm.tokenizer is not None
    assert out.prompt_token_ids == llm.tokenizer.encode("The gate opens at dawn.")
    assert len(completion.token_ids) == 24 and completion.finish_reason == "length"
    assert completion.text == llm.tokenizer.decode(completion.token_ids)


def test_stop_string_spanning_tokens_ends_the_text_before_it(llm: LLM) -> None:
    engine = llm.engine
    engine.add_request("plain", [5, 6, 7], greedy(40))
    pieces = [d.text for d in run(engine)]
    full = "".join(pieces)
    # A stop made of the end of one token's text and the start of the next one's.
    k = next(i for i in range(len(pieces) - 1) if len(pieces[i]) >= 2 and len(pieces[i + 1]) >= 2)
    stop = pieces[k][-2:] + pieces[k + 1][:2]
    engine.add_request("stopped", [5, 6, 7], greedy(40, stop=[stop]))
    deltas = run(engine)
    assert "".join(d.text for d in deltas) == full[: full.index(stop)]
    assert deltas[-1].finish_reason == "stop"
    assert all(stop not in d.text for d in deltas)


def test_multibyte_characters_are_never_split(llm: LLM) -> None:
    tok = llm.tokenizer
    assert tok is not None
    lead, cont = (
        next(i for i in range(tok.vocab_size) if tok.token_bytes(i) == b)
        for b in (b"\xc3", b"\xa9")
    )
    params = SamplingParams(
        temperature=1.0, seed=3, max_tokens=40, ignore_eos=True, logit_bias={lead: 100, cont: 100}
    )
    llm.engine.add_request("bytes", [5, 6], params)
    deltas = run(llm.engine)
    tokens = [t for d in deltas for t in d.token_ids]
    text = "".join(d.text for d in deltas)
    assert set(tokens) == {lead, cont}
    assert "é" in text and text == tok.decode(tokens)
    # Only the final flush may carry the replacement character of an unfinished byte run.
    assert not any(d.text.endswith("\ufffd") for d in deltas[:-1])


def test_eos_stops_unless_ignored(llm: LLM) -> None:
    force_eos = {EOS: 100.0}
    stopped, ignored = llm.generate(
        [[5, 6], [5, 6]],
        [
            SamplingParams(temperature=0.0, max_tokens=5, logit_bias=force_eos),
            SamplingParams(temperature=0.0, max_tokens=5, logit_bias=force_eos, ignore_eos=True),
        ],
    )
    assert stopped.outputs[0].token_ids == [EOS] and stopped.outputs[0].finish_reason == "stop"
    assert stopped.outputs[0].text == ""
    assert ignored.outputs[0].token_ids == [EOS] * 5
    assert ignored.outputs[0].finish_reason == "length"


def test_stop_token_ids(llm: LLM) -> None:
    (out,) = llm.generate([5, 6], greedy(logit_bias={42: 100.0}, stop_token_ids=[42]))
    assert out.outputs[0].token_ids == [42] and out.outputs[0].finish_reason == "stop"


def test_seeded_sampling_is_identical_across_runs_and_batch_mixes(tiny_model_dir: Path) -> None:
    seeded = SamplingParams(temperature=0.9, top_p=0.95, seed=11, max_tokens=16, ignore_eos=True)
    noise = SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True)
    prompt = [9, 10, 11, 12]
    alone = (
        LLM(str(tiny_model_dir), num_kv_blocks=128).generate(prompt, seeded)[0].outputs[0].token_ids
    )
    other = LLM(str(tiny_model_dir), num_kv_blocks=128, max_num_batched_tokens=16)
    crowd = [[i + 20] * (i + 3) for i in range(5)]
    outs = other.generate(
        [*crowd[:2], prompt, *crowd[2:]], [noise, noise, seeded, noise, noise, noise]
    )
    assert outs[2].outputs[0].token_ids == alone
    again = other.generate([prompt, prompt], [seeded, SamplingParams(seed=12, max_tokens=16)])
    assert again[0].outputs[0].token_ids == alone
    assert again[1].outputs[0].token_ids != alone


def test_n_completions_with_a_seed_differ_from_each_other(llm: LLM) -> None:
    params = SamplingParams(n=3, temperature=1.0, seed=5, max_tokens=12, ignore_eos=True)
    (out,) = llm.generate([5, 6, 7, 8, 9], params)
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in out.outputs}) == 3


def test_abort_frees_blocks_at_once(llm: LLM) -> None:
    engine = llm.engine
    for name in ("a", "b", "c"):
        engine.add_request(name, list(range(10, 40)), greedy(30))
    for _ in range(3):
        engine.step()
    used = engine.block_manager.num_used_blocks
    engine.abort("b")
    assert engine.block_manager.num_used_blocks < used
    engine.abort("unknown")  # ignored
    names = {d.request_id for d in run(engine)}
    assert names == {"a", "c"}
    assert engine.stats().running == 0 and engine.stats().kv_blocks_used == 0


def test_requests_beyond_max_model_len_are_rejected(tiny_model_dir: Path) -> None:
    engine = LLMEngine(tiny_model_dir, EngineOptions(max_model_len=64, num_kv_blocks=64))
    with pytest.raises(ValueError, match="max_tokens") as info:
        engine.add_request("r", [5] * 60, SamplingParams(max_tokens=10))
    assert isinstance(info.value, ContextLengthExceeded) and info.value.param == "max_tokens"
    with pytest.raises(ValueError, match="prompt"):
        engine.add_request("r", [5] * 64, SamplingParams(max_tokens=1))
    with pytest.raises(ValueError, match="prompt_token_ids"):
        engine.add_request("r", [], SamplingParams())
    with pytest.raises(ValueError, match="prompt_token_ids"):
        engine.add_request("r", [10**9], SamplingParams())
    with pytest.raises(ValueError, match="max_model_len"):
        LLMEngine(tiny_model_dir, EngineOptions(max_model_len=10**6))
    assert not engine.has_unfinished()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"block_size": 0}, "block_size"),
        ({"max_num_seqs": -1}, "max_num_seqs"),
        ({"dtype": "float16"}, "dtype"),
        ({"num_kv_blocks": 0}, "num_kv_blocks"),
        ({"kv_cache_memory_bytes": 10}, "kv_cache_memory_bytes"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_bad_engine_options_name_the_option(
    tiny_model_dir: Path, options: dict, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        LLM(str(tiny_model_dir), **options)


def test_generate_accepts_strings_token_ids_and_params_lists(llm: LLM) -> None:
    outs = llm.generate(["one", "two words"], [greedy(3), greedy(5)])
    assert [o.prompt for o in outs] == ["one", "two words"]
    assert [len(o.outputs[0].token_ids) for o in outs] == [3, 5]
    (single,) = llm.generate([5, 6, 7], greedy(2))
    assert single.prompt is None and single.prompt_token_ids == [5, 6, 7]
    with pytest.raises(ValueError, match="sampling_params"):
        llm.generate(["a", "b"], [greedy()])


def test_prefix_hits_are_reported(llm: LLM) -> None:
    prefix = list(range(100, 140))
    llm.generate([*prefix, 1], greedy(2))
    (out,) = llm.generate([*prefix, 2], greedy(2))
    assert out.num_cached_tokens == 40
    assert llm.engine.stats().prefix_cache_hit_rate > 0


def test_bfloat16_runs(tiny_model_dir: Path) -> None:
    bf16 = LLM(str(tiny_model_dir), dtype="bfloat16", num_kv_blocks=64)
    (out,) = bf16.generate([5, 6, 7, 8], greedy(8, logprobs=2))
    completion = out.outputs[0]
    assert len(completion.token_ids) == 8 and completion.logprobs is not None
    assert all(-100 < lp.logprob <= 0 for lp in completion.logprobs)
    fp32 = (
        LLM(str(tiny_model_dir), num_kv_blocks=64)
        .generate([5, 6, 7, 8], greedy(8))[0]
        .outputs[0]
        .token_ids
    )
    assert completion.token_ids[0] == fp32[0]
