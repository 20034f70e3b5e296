"""The command group and what every command shares: errors, loading, registry.

Start-up time matters here (``flowstream --version`` is typed by hand): the
command modules import the runtime, the routed flows and the connectors only
inside the commands that need them (tests/cli/test_cli_startup.py checks it).
"""

from __future__ import annotations

import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .._version import __version__

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..core.workflow import Workflow
    from ..errors import Problem, WorkflowValidationError
    from ..runtime.registry import NodeRegistry
    from ..runtime.validation import Graph


EXIT_FAILED, EXIT_INVALID = 1, 2


class UsageProblem(Exception):
    """Invalid input named on the command line (exit 2).

    Raised and caught inside the CLI only (never seen by library users); not
    a `FlowstreamError` so that ``--version`` need not import flowstream.errors
    (and msgspec with it).
    """


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn errors the user caused into messages and exit codes."""
    try:
        yield
    except _validation_error() as exc:
        head = f"{exc.source}: " if exc.source else ""
        count = len(exc.problems)
        click.echo(
            f"{head}invalid workflow, {count} problem{'s' * (count != 1)}:", err=True
        )
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(EXIT_INVALID)
    except _plain_errors() as exc:
        _fail(str(exc), EXIT_INVALID)
    except ExceptionGroup as group:
        # Raised inside a task group (a checkpoint store that is no SQLite
        # file, say): still the user's error, still no traceback.
        mine, rest = group.split(_plain_errors())
        if mine is None or rest is not None:
            raise
        _fail(str(_first_leaf(mine)), EXIT_INVALID)
    except OSError as exc:
        name = exc.filename if exc.filename is not None else ""
        _fail(f"{name}: {exc.strerror or exc}", EXIT_INVALID)


# Both evaluated only when an exception reaches the handler (cheap start-up).
def _validation_error() -> type[WorkflowValidationError]:
    from ..errors import WorkflowValidationError

    return WorkflowValidationError


def _plain_errors() -> tuple[type[Exception], ...]:
    """The user's errors shown as one line."""
    from ..errors import CodecError
    from ..runtime.checkpointing import CheckpointError

    return (CodecError, CheckpointError, UsageProblem)


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _warn(problems: list[Problem]) -> None:
    """Print validation warnings on stderr: shown, never fatal."""
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)


def load_graph(path: str) -> Graph:
    """Read and validate a workflow file (raising the user-facing errors).

    ``path`` may also name a workflow built in Python, ``"module:attr"`` (a
    `Workflow`, or a `flowstream.dataflow.Dataflow`), which may hold lambdas.
    """
    from ..core.workflow import Workflow
    from ..core.workflow_files import read_workflow
    from ..errors import Problem, WorkflowValidationError
    from ..runtime.validation import validate

    if not Path(path).exists() and re.fullmatch(r"[\w.]+:[\w.]+", path):
        from ..core.expr import ExprError, import_ref

        _add_cwd_to_path()
        try:
            found = import_ref(path)
        except ExprError as exc:
            raise WorkflowValidationError([Problem(str(exc))], path) from None
        built = getattr(found, "workflow", found)
        if not isinstance(built, Workflow):
            msg = f"{path!r} is a {type(found).__name__}, not a Workflow or Dataflow"
            raise WorkflowValidationError([Problem(msg)], path)
        return validate(built, _registry(built), source=path)
    workflow = read_workflow(path)
    return validate(workflow, _registry(workflow), source=path)


def _registry(workflow: Workflow | None = None) -> NodeRegistry:
    """The built-ins and installed packs, plus routed.flow (a flow per item).

    Given the workflow about to be validated or run, the installed packs are
    loaded only when it names a type the built-ins lack: importing every
    connector (and its client library) costs more than the rest of
    ``flowstream validate``. A pack may never replace a built-in type, so
    either registry gives a built-in-only workflow the same specs.
    """
    from ..engine import default_registry
    from ..routed.bridge import dataflow_registry

    if workflow is not None:
        builtins = dataflow_registry(default_registry(entry_points=False))
        if all(n.type in builtins for n in workflow.nodes):
            return builtins
    return dataflow_registry(default_registry())


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
