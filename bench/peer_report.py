"""Rows of `bench.engine --peers` and the table of issue #16, with its targets checked."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.engine import Run


def _p50(values: list[float], scale: float = 1.0) -> float | None:
    return round(float(np.percentile(values, 50)) * scale, 3) if values else None


@dataclass
class Row:
    name: str
    output_tok_s: float | None = None
    itl_p50_ms: float | None = None  # the batched workload's inter-token latency
    ttft_p50_s: float | None = None
    batch1_itl_p50_ms: float | None = None
    first_tokens: list[int] = field(default_factory=list)  # of the first batched request
    note: str = ""
    install: str | None = None  # set when the peer was skipped

    @classmethod
    def skipped(cls, name: str, install: str) -> Row:
        return cls(name, note=f"skipped: not installed ({install})", install=install)

    @classmethod
    def from_run(cls, name: str, batched: Run, batch1: Run | None) -> Row:
        return cls(
            name,
            output_tok_s=round(batched.tok_s, 2),
            itl_p50_ms=_p50(batched.itl_s, 1000),
            ttft_p50_s=_p50(batched.ttft_s),
            batch1_itl_p50_ms=_p50(batch1.itl_s, 1000) if batch1 else None,
            first_tokens=batched.first_tokens,
            note=batched.note,
        )

    @classmethod
    def batch1_only(cls, name: str, stamps: list[float], tokens: list[int], note: str) -> Row:
        itl = [b - a for a, b in itertools.pairwise(stamps)]
        return cls(name, batch1_itl_p50_ms=_p50(itl, 1000), first_tokens=tokens, note=note)

    def summary(self) -> dict[str, Any]:
        return dict(vars(self))


def from_stamps(name: str, result: dict[str, Any], *, note: str) -> Row:
    """A batched row from per-request token timestamps (seconds since all were submitted)."""
    stamps: list[list[float]] = result["stamps_s"]
    itl = [b - a for s in stamps for a, b in itertools.pairwise(s)]
    return Row(
        name,
        output_tok_s=round(sum(map(len, stamps)) / result["wall_s"], 2),
        itl_p50_ms=_p50(itl, 1000),
        ttft_p50_s=_p50([s[0] for s in stamps if s]),
        first_tokens=result.get("first_tokens", []),
        note=note,
    )


def _cell(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _targets(rows: dict[str, Row], report: dict[str, Any]) -> list[str]:
    ours, vllm, server = rows.get("ours"), rows.get("vLLM CPU"), rows.get("llama-server")
    llama = rows.get("llama-cpp-python")
    lines = []

    def check(label: str, value: float | None, target: float | None, better: str) -> None:
        if value is None or target is None:
            lines.append(f"  {label}: not measured")
            return
        met = value >= target if better == "higher" else value <= target
        lines.append(f"  {label}: {value:.2f} vs {target:.2f} -> {'met' if met else 'NOT met'}")

    def field_of(row: Row | None, name: str, scale: float = 1.0) -> float | None:
        value = getattr(row, name) if row is not None else None
        return None if value is None else value * scale

    if ours is not None:
        check(
            "throughput >= 1.0x vLLM", ours.output_tok_s, field_of(vllm, "output_tok_s"), "higher"
        )
        server_target = field_of(server, "output_tok_s", 1.25)
        check("throughput >= 1.25x llama-server", ours.output_tok_s, server_target, "higher")
        llama_ms = field_of(llama, "batch1_itl_p50_ms")
        check("batch-1 ms/token <= llama.cpp", ours.batch1_itl_p50_ms, llama_ms, "lower")
        check("TTFT p50 <= vLLM", ours.ttft_p50_s, field_of(vllm, "ttft_p50_s"), "lower")
        if ours.batch1_itl_p50_ms:
            share = report["weight_streaming_ms_per_token"] / ours.batch1_itl_p50_ms
            lines.append(f"  batch-1 at {share:.0%} of the weight-streaming limit (target >= 50%)")
    bf16 = rows.get("ours bf16")
    if ours and bf16 and ours.output_tok_s and bf16.output_tok_s:
        lines.append(f"  bf16 / fp32 throughput: {bf16.output_tok_s / ours.output_tok_s:.2f}"
                     " (target: not 3x slower)")  # fmt: skip
    return lines


def print_report(report: dict[str, Any], console: Console) -> None:
    rows = {r["name"]: Row(**r) for r in report["rows"]}
    w = report["workload"]
    table = Table(title=f"SmolLM2-135M-Instruct, float32, {report['threads']} threads; "
                  f"load {report['load_average_before'][0]:.1f} -> "
                  f"{report['load_average_after'][0]:.1f}")  # fmt: skip
    table.add_column("workload")
    for name in rows:
        table.add_column(name, justify="right")
    batched = (
        f"{w['requests']} requests ({w['prompt_tokens']} prompt tokens), {w['new_tokens']} new"
    )
    lines = [
        (f"{batched}: output tok/s", lambda r: _cell(r.output_tok_s)),
        ("same, decode step (ITL) p50 ms", lambda r: _cell(r.itl_p50_ms)),
        ("same, TTFT p50 s", lambda r: _cell(r.ttft_p50_s, 2)),
        ("one request alone, per-token latency p50 ms", lambda r: _cell(r.batch1_itl_p50_ms)),
    ]
    for label, cell in lines:
        table.add_row(label, *(cell(row) for row in rows.values()))
    table.add_row("note", *(row.note for row in rows.values()))
    console.print(table)
    console.print(
        f"weight streaming: {report['read_bandwidth_gb_s']} GB/s read, "
        f"{report['weight_bytes'] / 1e6:.0f} MB of weights -> "
        f"{report['weight_streaming_ms_per_token']} ms/token at batch 1"
    )
    firsts = {name: row.first_tokens[:16] for name, row in rows.items() if row.first_tokens}
    same = len({tuple(t) for t in firsts.values()}) <= 1
    console.print(f"first request's greedy tokens agree across {list(firsts)}: {same}")
    console.print("targets:\n" + "\n".join(_targets(rows, report)))
    console.print(f"ours, per step: {report['ours_profile']}")
