"""The text side of a checkpoint: tokens <-> text.

- `tokenizer`:   a checkpoint's tokenizer (`tokenizers` plus `tokenizer_config.json`).
- `detokenizer`: stable text deltas from a growing list of token ids.
- `stops`:       stop strings matched across token boundaries, never emitted.
"""
