"""The server's log format: plain text (uvicorn's own, the default) or one JSON object a line.

`sluicegate serve` passes `uvicorn_log_options(settings)` to uvicorn, which applies them in
every worker. In JSON mode every record (uvicorn's, the app's) is one JSON object with
`time`, `level`, `logger` and `message`, plus the fields of the app's one line per request
(api/request_log.py), which replaces uvicorn's access log.
"""

from __future__ import annotations

from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS

from core.config import Settings

JSON_FORMAT = "%(levelname)s %(name)s %(message)s"
RENAMED = {"levelname": "level", "name": "logger"}
# uvicorn's records carry a copy of the message with terminal colours: not for a collector
NOT_LOGGED = [*RESERVED_ATTRS, "color_message"]


def uvicorn_log_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run`: none in text mode (uvicorn's defaults)."""
    if settings.log_format == "text":
        return {}
    return {"log_config": json_logging(settings.log_level.upper()), "access_log": False}


def json_logging(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` writing every record as one JSON line to stdout."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": JSON_FORMAT,
                "rename_fields": RENAMED,
                "reserved_attrs": NOT_LOGGED,
                "timestamp": "time",  # ISO 8601, UTC
            }
        },
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"handlers": ["stdout"], "level": level},
        # uvicorn's own loggers propagate to the root: one handler, one format
        "loggers": {name: {"level": level} for name in ("uvicorn", "uvicorn.error")},
    }
