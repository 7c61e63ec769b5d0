"""Finding and loading checkpoints.

- `hub`:    a model name (`tiny`, a directory, a hub id) -> a local checkpoint directory.
- `loader`: a checkpoint's weights into one of our models (`inference/models/`).
"""
