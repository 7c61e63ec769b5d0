"""Which models the gateway serves and where their tokens come from (a YAML file).

```yaml
router: {affinity_tokens: 64, affinity_margin: 4, health_interval_s: 2}
models:
  - id: tiny
    context_length: 1024          # default: the checkpoint's (local engine or tokenizer dir)
    tokenizer: tiny               # like a local model; default: the local backend's, else id
    backends:
      - {type: local, model: tiny, engine: torch, options: {max_num_seqs: 32}}
      - {type: remote, base_url: "http://inference-1:8001", api_key_env: UPSTREAM_KEY}
```

`Settings.config_path` (`SLUICEGATE_CONFIG`) names the file; without it the gateway serves
`tiny` (the built-in tiny model) and every packaged model whose file has been fetched
(`smollm2-135m-instruct`, see `inference.checkpoints.packaged`; a missing one is logged with
the command that fetches it), each from an in-process torch engine. `${VAR}` and
`${VAR:-default}` in the file are replaced from the environment before parsing.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backends.base import Backend
from backends.local import LocalBackend
from backends.remote import RemoteBackend
from backends.router import BackendRouter, RouterSettings
from inference.checkpoints.packaged import PACKAGED_MODELS, is_fetched, model_root
from inference.protocol import InferenceEngine
from inference.text.tokenizer import Tokenizer


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in an operator's file must not pass


class LocalBackendSpec(_Strict):
    type: Literal["local"]
    name: str | None = None
    model: str = "tiny"  # checkpoint: DIR | FILE.gguf | tiny | packaged model | hub id
    engine: Literal["torch", "vllm"] = "torch"
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the engine
    max_outstanding: int = Field(default=256, ge=1)


class RemoteBackendSpec(_Strict):
    type: Literal["remote"]
    name: str | None = None
    base_url: str
    model: str | None = None  # the upstream's name for the model; default: the model id
    api_key: str | None = None
    api_key_env: str | None = None  # read the upstream key from this variable instead
    max_outstanding: int = Field(default=256, ge=1)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    read_timeout_s: float = Field(default=600.0, gt=0)


BackendSpec = Annotated[LocalBackendSpec | RemoteBackendSpec, Field(discriminator="type")]


class ModelSpec(_Strict):
    id: str = Field(min_length=1)
    context_length: int | None = Field(default=None, ge=2)
    tokenizer: str | None = None  # DIR | FILE.gguf | tiny | packaged model | hub id
    owned_by: str = "sluicegate"
    created: int = 1_700_000_000
    backends: list[BackendSpec] = Field(min_length=1)


class RouterSpec(_Strict):
    affinity_tokens: int = Field(default=64, ge=0)
    affinity_margin: int = Field(default=4, ge=0)
    health_interval_s: float = Field(default=2.0, gt=0)


class GatewayConfig(_Strict):
    router: RouterSpec = Field(default_factory=RouterSpec)
    models: list[ModelSpec] = Field(min_length=1)


def default_config() -> GatewayConfig:
    """`tiny`, plus each packaged model that is on disk (one local torch engine each)."""
    names = ["tiny"]
    for name in PACKAGED_MODELS:
        if is_fetched(name):
            names.append(name)
        else:
            log.warning(
                "%s is not served: its file is not in %s; fetch it once with "
                "`sluicegate models fetch %s` (`make run` does) and restart",
                name,
                model_root(),
                name,
            )
    return GatewayConfig(
        models=[
            ModelSpec(id=name, backends=[LocalBackendSpec(type="local", model=name)])
            for name in names
        ]
    )


log = logging.getLogger(__name__)
_ENV_REFERENCE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def expand_env(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace `${VAR}` and `${VAR:-default}` (as a shell would); an unset VAR is an error."""
    env = os.environ if environ is None else environ

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is None:
            raise ValueError(f"${{{name}}} is not set and has no default")
        return default

    return _ENV_REFERENCE.sub(value, text)


def load_config(path: Path | None) -> GatewayConfig:
    """The config in `path` (with `${VAR:-default}` expanded), or the built-in default."""
    if path is None:
        return default_config()
    try:
        raw = yaml.safe_load(expand_env(Path(path).read_text(encoding="utf-8")))
        config = GatewayConfig.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError, ValueError) as exc:
        raise ValueError(f"model config {path}: {exc}") from exc
    ids = [m.id for m in config.models]
    if len(set(ids)) != len(ids):
        raise ValueError(f"model config {path}: model ids must be unique")
    return config


@dataclass
class ModelEntry:
    """A servable model as the request pipeline sees it."""

    id: str
    context_length: int
    tokenizer: Tokenizer
    owned_by: str = "sluicegate"
    created: int = 1_700_000_000
    token_text: Callable[[int], str] = field(init=False)
    token_bytes: Callable[[int], bytes] = field(init=False)

    def __post_init__(self) -> None:
        # Logprobs render every token's text; a vocabulary-bounded cache makes that cheap.
        self.token_text = functools.lru_cache(maxsize=1 << 17)(self.tokenizer.decode_token)
        self.token_bytes = functools.lru_cache(maxsize=1 << 17)(self.tokenizer.token_bytes)


EngineFactory = Callable[[LocalBackendSpec], InferenceEngine]


def default_engine_factory(spec: LocalBackendSpec) -> InferenceEngine:
    from backends.local import open_engine  # torch loads only when a local engine is used

    return open_engine(spec.model, engine=spec.engine, options=spec.options)


@dataclass
class Deployment:
    """Everything the config builds: the models and a router over their backends."""

    models: dict[str, ModelEntry]
    router: BackendRouter


def build_deployment(
    config: GatewayConfig, *, engine_factory: EngineFactory = default_engine_factory
) -> Deployment:
    """Create (not start) every backend and tokenizer the config names."""
    models: dict[str, ModelEntry] = {}
    backends: dict[str, Sequence[Backend]] = {}
    for spec in config.models:
        built: list[Backend] = []
        engine: InferenceEngine | None = None
        for i, backend_spec in enumerate(spec.backends):
            name = backend_spec.name or f"{spec.id}/{backend_spec.type}-{i}"
            if isinstance(backend_spec, LocalBackendSpec):
                local = engine_factory(backend_spec)
                engine = engine or local
                built.append(
                    LocalBackend(local, name=name, max_outstanding=backend_spec.max_outstanding)
                )
            else:
                built.append(_remote(spec, backend_spec, name))
        models[spec.id] = _entry(spec, engine)
        backends[spec.id] = built
    router_settings = RouterSettings(
        affinity_tokens=config.router.affinity_tokens,
        affinity_margin=config.router.affinity_margin,
        health_interval_s=config.router.health_interval_s,
    )
    return Deployment(models=models, router=BackendRouter(backends, router_settings))


def _remote(model: ModelSpec, spec: RemoteBackendSpec, name: str) -> RemoteBackend:
    api_key = spec.api_key
    if spec.api_key_env:
        api_key = os.environ.get(spec.api_key_env)
        if not api_key:
            raise ValueError(f"model {model.id}: ${spec.api_key_env} is not set")
    return RemoteBackend(
        spec.base_url,
        model=spec.model or model.id,
        name=name,
        api_key=api_key,
        max_outstanding=spec.max_outstanding,
        connect_timeout_s=spec.connect_timeout_s,
        read_timeout_s=spec.read_timeout_s,
    )


def _entry(spec: ModelSpec, engine: InferenceEngine | None) -> ModelEntry:
    # Imported here: loading checkpoints pulls in torch, which remote-only gateways never need.
    from inference.checkpoints.hub import resolve_model_dir
    from inference.checkpoints.loader import load_config, load_tokenizer

    tokenizer_name = spec.tokenizer or _first_local_model(spec) or spec.id
    checkpoint = resolve_model_dir(tokenizer_name)
    tokenizer = (
        engine.tokenizer
        if engine is not None and spec.tokenizer is None and isinstance(engine.tokenizer, Tokenizer)
        else load_tokenizer(checkpoint)
    )
    context = spec.context_length
    if context is None:
        context = (
            engine.max_model_len
            if engine is not None
            else load_config(checkpoint).max_position_embeddings
        )
    return ModelEntry(
        id=spec.id,
        context_length=context,
        tokenizer=tokenizer,
        owned_by=spec.owned_by,
        created=spec.created,
    )


def _first_local_model(spec: ModelSpec) -> str | None:
    for backend in spec.backends:
        if isinstance(backend, LocalBackendSpec):
            return backend.model
    return None
