"""The command group and what every command shares: errors, loading, registry."""

from __future__ import annotations

import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .. import __version__
from ..core.expr import ExprError, import_ref
from ..core.workflow import Workflow, read_workflow
from ..errors import (
    CodecError,
    FlowstreamError,
    Problem,
    WorkflowValidationError,
)
from ..routed.bridge import dataflow_registry
from ..runtime.checkpointing import CheckpointError
from ..runtime.registry import NodeRegistry
from ..runtime.validation import Graph, validate

if TYPE_CHECKING:
    from collections.abc import Iterator


EXIT_FAILED, EXIT_INVALID = 1, 2


class UsageProblem(FlowstreamError):
    """Invalid input named on the command line (exit 2)."""


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn errors the user caused into messages and exit codes."""
    try:
        yield
    except WorkflowValidationError as exc:
        head = f"{exc.source}: " if exc.source else ""
        count = len(exc.problems)
        click.echo(
            f"{head}invalid workflow, {count} problem{'s' * (count != 1)}:", err=True
        )
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(EXIT_INVALID)
    except (CodecError, CheckpointError, UsageProblem) as exc:
        _fail(str(exc), EXIT_INVALID)
    except ExceptionGroup as group:
        # Raised inside a task group (a checkpoint store that is no SQLite
        # file, say): still the user's error, still no traceback.
        mine, rest = group.split((CodecError, CheckpointError, UsageProblem))
        if mine is None or rest is not None:
            raise
        _fail(str(_first_leaf(mine)), EXIT_INVALID)
    except OSError as exc:
        name = exc.filename if exc.filename is not None else ""
        _fail(f"{name}: {exc.strerror or exc}", EXIT_INVALID)


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _warn(problems: list[Problem]) -> None:
    """Print validation warnings on stderr: shown, never fatal."""
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)


def load_graph(path: str, registry: NodeRegistry) -> Graph:
    """Read and validate a workflow file (raising the user-facing errors).

    ``path`` may also name a workflow built in Python, ``"module:attr"`` (a
    `Workflow`, or a `flowstream.dataflow.Dataflow`), which may hold lambdas.
    """
    if not Path(path).exists() and re.fullmatch(r"[\w.]+:[\w.]+", path):
        _add_cwd_to_path()
        try:
            found = import_ref(path)
        except ExprError as exc:
            raise WorkflowValidationError([Problem(str(exc))], path) from None
        built = getattr(found, "workflow", found)
        if not isinstance(built, Workflow):
            msg = f"{path!r} is a {type(found).__name__}, not a Workflow or Dataflow"
            raise WorkflowValidationError([Problem(msg)], path)
        return validate(built, registry, source=path)
    workflow: Workflow = read_workflow(path)
    return validate(workflow, registry, source=path)


def _registry() -> NodeRegistry:
    # The built-ins and installed packs, plus routed.flow (a flow per item).
    return dataflow_registry(NodeRegistry.default())


def _add_cwd_to_path() -> None:
    # Workflows name user nodes and callables as "module:attr" relative to the
    # directory the command runs in, as `python -m` would.
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="flowstream")
def cli() -> None:
    """flowstream: streaming dataflow and DAG runs from one graph."""
    _add_cwd_to_path()
