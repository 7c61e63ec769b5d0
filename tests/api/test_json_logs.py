"""`SLUICEGATE_LOG_FORMAT=json`: every log line is a JSON object, and each request is exactly
one line with its id, account, key prefix, model, status, tokens and latency, and no secret.
`sluicegate serve` as a real process: what is tested is what an operator's collector reads.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.access import onboard_developer
from tests.gateway_process import sluicegate_serve


def log_lines(output: str) -> list[dict[str, Any]]:
    """Every line of the output, parsed (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in output.splitlines() if line.strip()]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_one_json_line_per_request_without_secrets(
    migrated_db_url: str, admin_key: str, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": migrated_db_url,
        "SLUICEGATE_ADMIN_KEY": admin_key,
        "SLUICEGATE_VAR_DIR": str(tmp_path / "var"),
        "SLUICEGATE_LOG_FORMAT": "json",
    }
    with sluicegate_serve(env, tmp_path / "serve.log") as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=120) as http:
            developer = await onboard_developer(http, admin_key)
            body = {"model": "tiny", "prompt": "Hello", "max_tokens": 5, "ignore_eos": True}
            completed = await http.post(
                "/v1/completions",
                json=body,
                params={"api_key": developer.key},  # a key in the query: never logged
                headers={**developer.headers, "x-request-id": "trace-json-1"},
            )
            assert completed.status_code == 200, completed.text
            unknown = await http.get("/v1/models", headers={"Authorization": "Bearer sk-nope"})
            assert unknown.status_code == 401
        time.sleep(0.5)  # let the last lines reach the file
        output = gateway.output()
    lines = log_lines(output)
    mine = [line for line in lines if line.get("request_id") == "trace-json-1"]
    assert len(mine) == 1, mine
    [line] = mine
    usage = completed.json()["usage"]
    assert line["message"] == "request" and line["logger"] == "sluicegate.requests"
    assert {k: line[k] for k in ("method", "path", "status", "account_id", "model")} == {
        "method": "POST",
        "path": "/v1/completions",
        "status": 200,
        "account_id": developer.account_id,
        "model": "tiny",
    }
    assert line["key_prefix"] == developer.key[: len("sk-") + 8]
    assert (line["prompt_tokens"], line["completion_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert isinstance(line["latency_ms"], int) and line["latency_ms"] >= 0
    assert {"time", "level"} <= set(line)
    refused = [line for line in lines if line.get("path") == "/v1/models"]
    assert [(r["status"], r["account_id"], r["model"]) for r in refused] == [(401, None, None)]
    # one line per request: the onboarding's four and these two (no uvicorn access lines)
    assert len([line for line in lines if line.get("logger") == "sluicegate.requests"]) >= 6
    assert not any(line.get("logger") == "uvicorn.access" for line in lines)
    assert developer.key not in output and "api_key" not in output and "Bearer" not in output
    assert admin_key not in output and "sk-nope" not in output
