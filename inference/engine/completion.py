"""One completion's output side: finish checks, text, stop strings, logprobs -> deltas."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inference.engine.sequence import Sequence
from inference.outputs import FinishReason, GenerationDelta, TokenLogprob
from inference.text.detokenizer import IncrementalDetokenizer
from inference.text.stops import StopMatcher
from inference.text.tokenizer import Tokenizer

if TYPE_CHECKING:
    from inference.engine.model_runner import Sampled


class Completion:
    """Turns each new token of one sequence into a `GenerationDelta`.

    A token that ends the completion by being EOS or one of `stop_token_ids` is kept in
    `token_ids` (and counted) but contributes no text, as in vLLM. Stop strings end the text
    just before the stop string.
    """

    def __init__(self, seq: Sequence, tokenizer: Tokenizer | None, eos_token_ids: set[int]):
        self.seq = seq
        params = seq.group.params
        self._detok = (
            IncrementalDetokenizer(tokenizer, seq.group.prompt_token_ids)
            if tokenizer is not None
            else None
        )
        self._stops = StopMatcher(params.stop)
        self._eos = frozenset() if params.ignore_eos else frozenset(eos_token_ids)
        self._stop_ids = frozenset(params.stop_token_ids)
        self.cumulative_logprob = 0.0
        wants_prompt = params.prompt_logprobs is not None and seq.index == 0
        # Position 0 has no logprob: nothing precedes it.
        self._prompt_logprobs: list[TokenLogprob | None] | None = [None] if wants_prompt else None
        self._first_delta = True

    def add_prompt_logprobs(self, first: int, logprobs: list[TokenLogprob]) -> None:
        """Logprobs of prompt positions `first`, `first + 1`, ...; repeats (recompute) skipped."""
        if self._prompt_logprobs is None:
            return
        skip = len(self._prompt_logprobs) - first
        self._prompt_logprobs.extend(logprobs[max(skip, 0) :])

    def advance(self, sampled: Sampled, max_model_len: int) -> GenerationDelta:
        seq, token = self.seq, sampled.token_id
        reason = self._finish_reason(token, max_model_len)
        text = ""
        if self._detok is not None:
            if token not in self._stop_ids and token not in self._eos:
                text = self._detok.push([token])
            if reason is not None:
                text += self._detok.flush()
        text, stopped = self._stops.push(text)
        if stopped:
            reason = "stop"
        elif reason is not None:
            text += self._stops.flush()
        seq.finish_reason = reason
        if sampled.logprob is not None:
            self.cumulative_logprob += sampled.logprob.logprob
        prompt_logprobs = self._prompt_logprobs if self._first_delta else None
        self._first_delta = False
        return GenerationDelta(
            request_id=seq.group.request_id,
            index=seq.index,
            token_ids=[token],
            text=text,
            logprobs=None if sampled.logprob is None else [sampled.logprob],
            finish_reason=reason,
            prompt_tokens=seq.num_prompt_tokens,
            completion_tokens=seq.num_output_tokens,
            cached_tokens=seq.num_cached_tokens,
            cumulative_logprob=self.cumulative_logprob,
            prompt_logprobs=prompt_logprobs,
        )

    def _finish_reason(self, token: int, max_model_len: int) -> FinishReason | None:
        if token in self._stop_ids or token in self._eos:
            return "stop"
        if self.seq.num_output_tokens >= self.seq.group.params.max_tokens:
            return "length"
        if len(self.seq.token_ids) >= max_model_len:
            return "length"
        return None
