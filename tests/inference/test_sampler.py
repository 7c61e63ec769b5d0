"""The sampler's pure functions on hand-made logits."""

from __future__ import annotations

import pytest
import torch

from inference.engine.sampler import (
    SamplingRow,
    apply_logit_bias,
    apply_penalties,
    apply_top_k_top_p,
    output_counts,
    sample,
    token_logprobs,
)
from inference.params import SamplingParams


def row(
    generator: torch.Generator | None = None, outputs: list[int] | None = None, **kw: object
) -> SamplingRow:
    return SamplingRow(SamplingParams(**kw), outputs or [], generator)  # type: ignore[arg-type]


def test_penalties_follow_the_openai_definition() -> None:
    logits = torch.zeros(1, 4)
    counts = output_counts([[1, 1, 1, 2]], 4)
    assert counts.tolist() == [[0, 3, 1, 0]]
    out = apply_penalties(logits, counts, torch.tensor([0.5]), torch.tensor([0.25]))
    assert out.tolist() == [[0.0, -(0.5 + 0.75), -(0.5 + 0.25), 0.0]]


def test_logit_bias_adds_to_chosen_tokens_and_ignores_ids_past_the_vocab() -> None:
    out = apply_logit_bias(torch.zeros(2, 3), [{1: 5.0, 99: 1.0}, {}])
    assert out.tolist() == [[0.0, 5.0, 0.0], [0.0, 0.0, 0.0]]


def test_top_k_and_top_p_mask_the_tail() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.5, 0.3, 0.15, 0.05]]))
    out = apply_top_k_top_p(logits, torch.tensor([2, 4]), torch.tensor([1.0, 0.7]))
    kept = torch.isfinite(out)
    assert kept.tolist() == [[True, True, False, False], [True, True, False, False]]
    out = apply_top_k_top_p(logits[:1], torch.tensor([4]), torch.tensor([0.45]))
    assert torch.isfinite(out).tolist() == [[True, False, False, False]]  # always keeps the top


def test_greedy_takes_the_argmax_after_penalties() -> None:
    logits = torch.tensor([[1.0, 2.0, 1.5]])
    assert sample(logits, [row(temperature=0.0)]).tolist() == [1]
    penalised = row(outputs=[1], temperature=0.0, presence_penalty=1.0)
    assert sample(logits, [penalised]).tolist() == [2]


def test_sampling_respects_top_k() -> None:
    logits = torch.zeros(1, 10)
    logits[0, 3] = logits[0, 7] = 1.0
    seen = {sample(logits, [row(temperature=1.0, top_k=2)]).item() for _ in range(50)}
    assert seen == {3, 7}


def test_sampling_matches_the_distribution() -> None:
    probs = torch.tensor([0.6, 0.3, 0.1])
    logits = probs.log().expand(4000, 3).clone()
    tokens = sample(logits, [row(temperature=1.0)] * 4000)
    freq = torch.bincount(tokens, minlength=3).float() / 4000
    assert torch.allclose(freq, probs, atol=0.04)


def test_seeded_rows_ignore_their_neighbours() -> None:
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))

    def draws(neighbours: int) -> list[int]:
        gen = torch.Generator().manual_seed(1234)
        rows = [row(temperature=0.9)] * neighbours + [row(gen, temperature=0.9)]
        batch = torch.cat([logits[:neighbours], logits[2:3]])
        return [int(sample(batch, rows)[-1]) for _ in range(8)]

    alone = draws(0)
    assert alone == draws(2)
    assert len(set(alone)) > 1  # it does sample


def test_logprobs_are_of_the_raw_distribution() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    (lp,) = token_logprobs(logits, torch.tensor([1]), [2])
    expected = torch.log_softmax(logits, dim=-1)[0]
    assert lp.token_id == 1
    assert lp.logprob == pytest.approx(expected[1].item())
    assert list(lp.top) == [0, 1]
    assert lp.top[0] == pytest.approx(expected[0].item())
