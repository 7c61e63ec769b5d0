"""A Llama-family model whose step runs in C (`llama_forward.c`), built from our torch `Llama`.

The torch model is the reference and the fallback; this is the fast path where the kernels
build. At construction every linear layer is packed for `gemm.c` (panels of 16 output
features, k-major; gate and up interleaved so the matmul emits silu(gate) * up), the RoPE
tables are computed once by the torch model's own function, and the torch weights are
dropped. With tied embeddings the packed head doubles as the embedding table, so nothing is
held twice. Same interface as `Llama`: `forward` gives hidden states before the final norm,
`compute_logits` the logits of the rows that need them.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
from torch import Tensor

from inference.models.attention import KVCache
from inference.models.config import ModelConfig
from inference.models.llama import Llama, LlamaBlock, rotary_cos_sin

PANEL = 16
# The phases of a layer in llama_forward.c, in its order (the profile's columns).
PHASES = ("qkv", "rope", "attention", "o_proj", "mlp_norm", "gate_up", "down", "attn_norm")
_P, _I64, _I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32


class _Packed(ctypes.Structure):
    _fields_ = [("data", _P), ("bias", _P), ("n", _I64), ("k", _I64), ("bf16", _I32),
                ("swiglu", _I32)]  # fmt: skip


class _Layer(ctypes.Structure):
    _fields_ = [("attn_norm", _P), ("mlp_norm", _P), ("qkv", _Packed), ("o", _Packed),
                ("gate_up", _Packed), ("down", _Packed)]  # fmt: skip


class _Model(ctypes.Structure):
    _fields_ = [("hidden", _I64), ("heads", _I64), ("kv_heads", _I64), ("head_dim", _I64),
                ("layers", _I64), ("vocab", _I64), ("max_positions", _I64),
                ("eps", ctypes.c_float), ("embed", _P), ("rope_cos", _P), ("rope_sin", _P),
                ("layer", ctypes.POINTER(_Layer)), ("final_norm", _P),
                ("head", _Packed)]  # fmt: skip


class _Step(ctypes.Structure):
    _fields_ = [("rows", _I64), ("ids", _P), ("positions", _P), ("slots", _P),
                ("row_table", _P), ("block_tables", _P), ("max_blocks", _I64),
                ("block_size", _I64), ("max_context", _I64), ("k_pools", _P), ("v_pools", _P),
                ("kv_bf16", _I32), ("decodes_only", _I32), ("profile", _P), ("x", _P),
                ("scratch", _P),
                ("num_threads", _I32)]  # fmt: skip


@dataclass
class NativeBatch:
    """What a C step needs besides the token ids and positions (all int64, contiguous)."""

    slots: Tensor  # [T] pool slot of each row's new key and value
    row_table: Tensor  # [T] row of `block_tables` each row reads its context through
    block_tables: Tensor  # [tables, max_blocks], padded with block 0
    block_size: int
    decodes_only: bool  # every row is its sequence's only row (then no row reads another's key)


def bind(library: ctypes.CDLL) -> None:
    """Declare the C entry points' signatures (ctypes would pass int64 arguments as int)."""
    library.sg_gemm.argtypes = [_P, _I64, _I64, ctypes.POINTER(_Packed), _P, _I64,
                                ctypes.c_int, ctypes.c_int, ctypes.c_int]  # fmt: skip
    library.sg_gemm.restype = None
    library.llama_forward.argtypes = [ctypes.POINTER(_Model), ctypes.POINTER(_Step)]
    library.llama_forward.restype = ctypes.c_int
    library.llama_logits.argtypes = [ctypes.POINTER(_Model), _P, _I64, _P, ctypes.c_int]
    library.llama_logits.restype = ctypes.c_int
    library.llama_scratch_floats.argtypes = [ctypes.POINTER(_Model), _I64, _I64, ctypes.c_int]
    library.llama_scratch_floats.restype = _I64


def _pad_rows(weight: Tensor, rows: int) -> Tensor:
    return torch.cat([weight, weight.new_zeros(rows - weight.shape[0], weight.shape[1])])


def pack_linear(weight: Tensor, bias: Tensor | None) -> tuple[_Packed, list[Tensor]]:
    """`weight` [n, k] in panels of 16 output features ([panels, k, 16], zero-padded).

    Returns the C descriptor and the tensors it points into (keep them alive)."""
    n, k = weight.shape
    rows = -(-n // PANEL) * PANEL
    data = _pad_rows(weight, rows).view(rows // PANEL, PANEL, k).transpose(1, 2).contiguous()
    keep = [data]
    if bias is not None:
        keep.append(torch.cat([bias.float(), bias.new_zeros(rows - n).float()]))
    packed = _Packed(
        data=data.data_ptr(), bias=keep[1].data_ptr() if bias is not None else None,
        n=n, k=k, bf16=weight.dtype == torch.bfloat16, swiglu=0,
    )  # fmt: skip
    return packed, keep


def pack_swiglu(weight: Tensor, bias: Tensor | None) -> tuple[_Packed, list[Tensor]]:
    """Gate and up (`weight` [2f, k], as fused at load) interleaved 8 and 8 per panel; the
    matmul then writes silu(gate) * up, [rows, f]."""
    f, k = weight.shape[0] // 2, weight.shape[1]
    rows = -(-f // 8) * 8
    gate, up = (_pad_rows(w, rows).view(rows // 8, 8, k) for w in weight.chunk(2))
    data = torch.cat([gate, up], dim=1).transpose(1, 2).contiguous()
    keep = [data]
    if bias is not None:
        halves = [torch.cat([b.float(), b.new_zeros(rows - f).float()]) for b in bias.chunk(2)]
        keep.append(torch.stack([h.view(-1, 8) for h in halves], dim=1).reshape(-1))
    packed = _Packed(
        data=data.data_ptr(), bias=keep[1].data_ptr() if bias is not None else None,
        n=f, k=k, bf16=weight.dtype == torch.bfloat16, swiglu=1,
    )  # fmt: skip
    return packed, keep


class NativeLlama:
    def __init__(self, model: Llama, library: ctypes.CDLL, *, max_positions: int):
        bind(library)
        self.library = library
        self.config = c = model.config
        self._keep: list[Tensor] = []  # every tensor the C side points into
        self.dtype = model.lm_head.weight.dtype
        layers = [self._layer(block) for block in model.layers if isinstance(block, LlamaBlock)]
        self._layers = (_Layer * len(layers))(*layers)
        cos, sin = rotary_cos_sin(torch.arange(max_positions), c.head_dim, c.rope_theta,
                                  torch.float32)  # fmt: skip
        half = c.head_dim // 2
        tied = model.lm_head.weight is model.embed_tokens.weight
        embed = None if tied else self._hold(model.embed_tokens.weight.float())
        self._struct = _Model(
            hidden=c.hidden_size, heads=c.num_heads, kv_heads=c.num_kv_heads,
            head_dim=c.head_dim, layers=c.num_layers, vocab=c.vocab_size,
            max_positions=max_positions, eps=c.norm_eps,
            embed=embed, rope_cos=self._hold(cos[:, 0, :half]),
            rope_sin=self._hold(sin[:, 0, :half]), layer=self._layers,
            final_norm=self._hold(model.norm.weight.float()),
            head=self._packed(pack_linear(model.lm_head.weight, None)),
        )  # fmt: skip
        self._scratch = torch.empty(0)
        # Set to torch.zeros(len(PHASES), dtype=torch.long) to collect nanoseconds per phase.
        self.profile: Tensor | None = None

    def _hold(self, tensor: Tensor) -> int:
        tensor = tensor.contiguous()
        self._keep.append(tensor)
        return tensor.data_ptr()

    def _packed(self, packed: tuple[_Packed, list[Tensor]]) -> _Packed:
        self._keep.extend(packed[1])
        return packed[0]

    def _layer(self, block: LlamaBlock) -> _Layer:
        attn, mlp = block.self_attn, block.mlp
        return _Layer(
            attn_norm=self._hold(block.input_layernorm.weight.float()),
            mlp_norm=self._hold(block.post_attention_layernorm.weight.float()),
            qkv=self._packed(pack_linear(attn.qkv_proj.weight, attn.qkv_proj.bias)),
            o=self._packed(pack_linear(attn.o_proj.weight, attn.o_proj.bias)),
            gate_up=self._packed(pack_swiglu(mlp.gate_up_proj.weight, mlp.gate_up_proj.bias)),
            down=self._packed(pack_linear(mlp.down_proj.weight, mlp.down_proj.bias)),
        )

    def _scratch_for(self, rows: int, max_context: int, threads: int) -> Tensor:
        size = self.library.llama_scratch_floats(self._struct, rows, max_context, threads)
        if self._scratch.numel() < size:  # grown, never shrunk: steps reuse warm pages
            self._scratch = torch.empty(size)
        return self._scratch

    def __call__(
        self, input_ids: Tensor, positions: Tensor, caches: list[KVCache], batch: NativeBatch
    ) -> Tensor:
        """Hidden states [T, d] (float32) before the final norm; fills the caches' slots."""
        rows, threads = input_ids.shape[0], torch.get_num_threads()
        max_context = int(positions.max()) + 1
        x = torch.empty(rows, self.config.hidden_size)
        k_pools = (_P * len(caches))(*(k.data_ptr() for k, _ in caches))
        v_pools = (_P * len(caches))(*(v.data_ptr() for _, v in caches))
        step = _Step(
            rows=rows, ids=input_ids.data_ptr(), positions=positions.data_ptr(),
            slots=batch.slots.data_ptr(), row_table=batch.row_table.data_ptr(),
            block_tables=batch.block_tables.data_ptr(), max_blocks=batch.block_tables.shape[1],
            block_size=batch.block_size, max_context=max_context,
            k_pools=ctypes.cast(k_pools, _P), v_pools=ctypes.cast(v_pools, _P),
            kv_bf16=caches[0][0].dtype == torch.bfloat16, decodes_only=batch.decodes_only,
            profile=None if self.profile is None else self.profile.data_ptr(),
            x=x.data_ptr(),
            scratch=self._scratch_for(rows, max_context, threads).data_ptr(),
            num_threads=threads,
        )  # fmt: skip
        if self.library.llama_forward(self._struct, step) != 0:
            raise MemoryError("llama_forward could not allocate its counters")
        return x

    def compute_logits(self, hidden: Tensor) -> Tensor:
        hidden = hidden.float().contiguous()
        logits = torch.empty(hidden.shape[0], self.config.vocab_size)
        status = self.library.llama_logits(
            self._struct, hidden.data_ptr(), hidden.shape[0], logits.data_ptr(),
            torch.get_num_threads(),
        )  # fmt: skip
        if status != 0:
            raise MemoryError("llama_logits could not allocate its buffer")
        return logits

    @staticmethod
    def supports(config: ModelConfig) -> bool:
        return config.arch == "llama" and config.head_dim % 2 == 0
