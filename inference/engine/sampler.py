"""Turning a step's logits into tokens: small pure functions over `[rows, vocab]` tensors.

Order, as in vLLM: presence/frequency penalties and logit_bias on the raw logits (greedy rows
then take the argmax), then temperature, top-k, top-p, and a draw. The draw is an
exponential race (argmax of p / Exp(1) noise, equivalent to sampling from p) so each seeded
row can take its noise from its own `torch.Generator`: a seeded request then gets the same
tokens whatever else shares the batch.

Logprobs are those of the RAW model distribution (log_softmax of the logits before
penalties, bias, temperature and truncation), which is vLLM's default (`raw_logprobs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from inference.outputs import TokenLogprob
from inference.params import SamplingParams


@dataclass
class SamplingRow:
    params: SamplingParams
    output_token_ids: Sequence[int]  # for the penalties
    generator: torch.Generator | None  # set for seeded requests


def apply_penalties(logits: Tensor, counts: Tensor, presence: Tensor, frequency: Tensor) -> Tensor:
    """OpenAI's definition: minus frequency x count, minus presence if the token occurred."""
    return logits - frequency[:, None] * counts - presence[:, None] * (counts > 0).to(logits.dtype)


def output_counts(rows: Sequence[Sequence[int]], vocab_size: int) -> Tensor:
    counts = torch.zeros(len(rows), vocab_size)
    for i, tokens in enumerate(rows):
        if tokens:
            index = torch.tensor(tokens, dtype=torch.long)
            counts[i].index_add_(0, index, torch.ones(len(tokens)))
    return counts


def apply_logit_bias(logits: Tensor, biases: Sequence[dict[int, float]]) -> Tensor:
    rows, cols, values = [], [], []
    for i, bias in enumerate(biases):
        for token, value in bias.items():
            if token < logits.shape[1]:  # ids past the vocabulary cannot be sampled anyway
                rows.append(i)
                cols.append(token)
                values.append(value)
    if not rows:
        return logits
    index = (torch.tensor(rows), torch.tensor(cols))
    return logits.index_put(index, torch.tensor(values, dtype=logits.dtype), accumulate=True)


def apply_top_k_top_p(logits: Tensor, top_k: Tensor, top_p: Tensor) -> Tensor:
    """Mask (to -inf) all but the top_k most likely tokens and the smallest top_p nucleus."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    rank = torch.arange(logits.shape[1]).expand_as(sorted_logits)
    drop = rank >= top_k[:, None]
    probs = sorted_logits.softmax(dim=-1)
    drop |= (probs.cumsum(dim=-1) - probs) > top_p[:, None]  # mass before this token
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, sorted_logits)


def exponential_race(probs: Tensor, generators: Sequence[torch.Generator | None]) -> Tensor:
    """One token per row drawn from `probs`, seeded rows from their own generator."""
    noise = torch.empty_like(probs).exponential_()
    for i, generator in enumerate(generators):
        if generator is not None:
            noise[i].exponential_(generator=generator)
    return (probs / noise).argmax(dim=-1)


def sample(logits: Tensor, rows: Sequence[SamplingRow]) -> Tensor:
    """Token ids [rows] for fp32 logits [rows, vocab]."""
    params = [row.params for row in rows]
    if any(p.presence_penalty or p.frequency_penalty for p in params):
        counts = output_counts([row.output_token_ids for row in rows], logits.shape[1])
        presence = torch.tensor([p.presence_penalty for p in params])
        frequency = torch.tensor([p.frequency_penalty for p in params])
        logits = apply_penalties(logits, counts, presence, frequency)
    logits = apply_logit_bias(logits, [p.logit_bias for p in params])
    greedy_tokens = logits.argmax(dim=-1)
    random_rows = [i for i, p in enumerate(params) if not p.greedy]
    if not random_rows:
        return greedy_tokens
    chosen = [params[i] for i in random_rows]
    picked = logits[random_rows] / torch.tensor([p.temperature for p in chosen])[:, None]
    if any(0 < p.top_k < logits.shape[1] or p.top_p < 1.0 for p in chosen):
        top_k = torch.tensor([p.top_k if p.top_k > 0 else logits.shape[1] for p in chosen])
        picked = apply_top_k_top_p(picked, top_k, torch.tensor([p.top_p for p in chosen]))
    drawn = exponential_race(picked.softmax(dim=-1), [rows[i].generator for i in random_rows])
    greedy_tokens[random_rows] = drawn
    return greedy_tokens


def token_logprobs(logits: Tensor, token_ids: Tensor, num_top: Sequence[int]) -> list[TokenLogprob]:
    """Raw-model logprob of each row's token and its `num_top[i]` best alternatives."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(1, token_ids[:, None])[:, 0].tolist()
    width = max(num_top, default=0)
    top_values, top_ids = logprobs.topk(width, dim=-1) if width else (None, None)
    results = []
    for i, token in enumerate(token_ids.tolist()):
        top: dict[int, float] = {}
        if top_values is not None and top_ids is not None and num_top[i]:
            ids, values = top_ids[i, : num_top[i]].tolist(), top_values[i, : num_top[i]].tolist()
            top = dict(zip(ids, values, strict=True))
        results.append(TokenLogprob(token_id=token, logprob=chosen[i], top=top))
    return results
