"""GGUF checkpoints (llama.cpp's single-file format), read with the `gguf` package.

- `file`:      open a `.gguf`, read its metadata, refuse architectures we do not run.
- `config`:    our `ModelConfig` from the `<arch>.*` metadata keys.
- `weights`:   the tensors dequantized to float and renamed to Hugging Face's names (llama.cpp's
               RoPE row permutation of q/k undone), ready for `Llama.state_from_hf`.
- `tokenizer`: our `Tokenizer` from `tokenizer.ggml.*` and `tokenizer.chat_template`.
"""
