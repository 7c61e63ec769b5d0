"""The built-in tiny model: seeded weights and a tokenizer trained on a shipped corpus.

- `build`:      writes the checkpoint (`python -m inference.tiny.build DIR [--arch llama]`).
- `corpus.txt`: the fixed text its tokenizer is trained on.
- `corpus_gen`: regenerates that text.
"""
