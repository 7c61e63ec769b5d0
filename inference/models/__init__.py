"""Model code over a flat packed batch with a paged KV cache (gpt-fast's one-file-a-model).

- `config`:            a model's shape (`ModelConfig`), read from a Hugging Face `config.json`.
- `gpt2`:              GPT-2.
- `llama`:             the Llama family (Llama, Mistral, Qwen2).
- `layers`:            small building blocks the model files share.
- `attention`:         attention whose keys and values live in the paged pool.
- `native`:            the C kernels (`paged_attention.c`, `gemm.c`, `llama_forward.c`), built on
                       first use.
- `native_llama`:      a Llama-family model whose step runs in C (packed weights, one call a step).
"""
