"""File connectors: ``file.source`` and ``file.sink``, JSON Lines or CSV.

``file.source`` reads a file line by line (``follow: true`` keeps tailing it
as it grows, in stream mode); ``file.sink`` appends records to a file. Both
keep the byte offset they reached in the node's state (``ctx.state``), where
checkpoints will find it:

* source: ``offset`` is where the next unread line starts, ``line`` how many
  lines were consumed (and ``fields``, a CSV header already read);
* sink: ``offset`` is the end of what the node wrote (at a checkpoint, the
  size the file is truncated back to on recovery), ``records`` how many
  records it wrote (and ``fields``, its CSV columns).

Blocking file calls run in worker threads on raw descriptors (``os.pread``,
``os.write``), never on the event loop. A descriptor is closed only once no
thread uses it any more, even after an aborted run.

The line splitting and JSON Lines encoding in `connectors.files._formats` are
shared with `connectors.stdio`.

This module re-exports the public names (those outside ``__all__`` too); the
code is split by concept:

* `connectors.files._common`: the format a path implies, the config checks both
  nodes run, and the descriptors whose calls run in worker threads;
* `connectors.files._formats`: lines, the JSON Lines and CSV decoders, and
  JSON Lines encoding;
* `connectors.files.source`: the ``file.source`` node and its config;
* `connectors.files.sink`: the ``file.sink`` node and its config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._common import CLOSE_WAIT_S as CLOSE_WAIT_S, FileFormat as FileFormat
from ._formats import (
    MAX_TEXT_IN_ERROR as MAX_TEXT_IN_ERROR,
    CsvDecoder as CsvDecoder,
    JsonLinesDecoder as JsonLinesDecoder,
    Line as Line,
    LineSplitter as LineSplitter,
    Rejected as Rejected,
    bad_line as bad_line,
    encode_json_lines as encode_json_lines,
)
from .sink import FileSink, FileSinkConfig, file_sink
from .source import (
    CHUNK_BYTES as CHUNK_BYTES,
    FileSource,
    FileSourceConfig,
    file_source,
)

if TYPE_CHECKING:
    from flowstream import NodeSpec

__all__ = [
    "NODES",
    "FileSink",
    "FileSinkConfig",
    "FileSource",
    "FileSourceConfig",
    "file_sink",
    "file_source",
]

NODES: tuple[NodeSpec, ...] = (file_source, file_sink)
"""This family's node types (its ``flowstream.nodes`` entry point)."""
