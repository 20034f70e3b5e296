"""Logging for the server and command line: run and node ids on every record.

`RunContext` is a logging filter that gives each record ``run_id`` and
``node_id`` attributes: the run from `current_run` (a context variable the
server and the command line set around a run, inherited by every task the
run starts), the node from the record's own ``extra`` or from the logger name
``flowstream.node.<id>`` that node code logs under. Both are None elsewhere.

`JsonFormatter` writes one JSON object per line with the time, level, logger,
message, run and node ids, the exception if any, and every ``extra`` field.
Nothing here imports a web framework: ``flowstream run`` uses it too.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import sys
from typing import Any, Final

import msgspec

__all__ = [
    "JsonFormatter",
    "RunContext",
    "TextFormatter",
    "configure_logging",
    "current_run",
]

current_run: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "flowstream_run_id", default=None
)
"""The id of the run the current task works for, if any."""

_NODE_LOGGER: Final = "flowstream.node."

# Attributes every LogRecord has; anything else came from ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "run_id",
    "node_id",
}


class RunContext(logging.Filter):
    """Adds ``run_id`` and ``node_id`` to every record it sees (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Set the record's run and node ids; keep the record."""
        if getattr(record, "run_id", None) is None:
            record.run_id = current_run.get()
        if getattr(record, "node_id", None) is None:
            name = record.name
            record.node_id = (
                name[len(_NODE_LOGGER) :] if name.startswith(_NODE_LOGGER) else None
            )
        return True


def _default(obj: Any) -> Any:
    return repr(obj)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON.

    Keys: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    ``run_id``, ``node_id``, ``exception`` (the formatted traceback, when
    there is one) and every field passed in ``extra``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._encoder = msgspec.json.Encoder(enc_hook=_default)

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as JSON text."""
        doc: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "run_id": getattr(record, "run_id", None),
            "node_id": getattr(record, "node_id", None),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return self._encoder.encode(doc).decode()


class TextFormatter(logging.Formatter):
    """One line per record: time (ISO 8601, UTC, ms), level, logger, message.

    ``[run=<id>]`` (and ``[node=<id>]``) appear only on records that belong
    to a run or node, so the web server's own lines carry no ``[run=None]``.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one line of text (and its traceback, if any)."""
        moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
        parts = [
            moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            record.levelname,
            record.name,
        ]
        run_id = getattr(record, "run_id", None)
        if run_id is not None:
            parts.append(f"[run={run_id}]")
        node_id = getattr(record, "node_id", None)
        if node_id is not None:
            parts.append(f"[node={node_id}]")
        parts.append(record.getMessage())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    """Send log records to stderr, as text or JSON lines, with run and node ids.

    Replaces the root logger's handlers (the command line owns the process).

    Args:
        fmt: ``"text"`` or ``"json"``.
        level: The root logger's level.

    Raises:
        ValueError: Unknown format.
    """
    if fmt not in ("text", "json"):
        msg = f"log format must be 'text' or 'json', got {fmt!r}"
        raise ValueError(msg)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RunContext())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
