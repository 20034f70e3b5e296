"""The server's data directory: the only place uploaded workflows' files may be.

Every config field marked `FilePath` (a checkpoint store, a journal, a file
or SQLite source or sink) and the workflow's ``checkpoint.path`` are resolved
here before a run: a relative path is taken inside the data directory, and
anything that would leave it is refused, naming the node and the field. The
server's own database (with its ``-wal``, ``-shm`` and ``-journal`` files)
and its token file are refused even when the operator put them inside.

Resolution happens once, when the run is validated, and the run gets the
absolute paths: a workflow cannot change the answer afterwards. A symlink
inside the directory that points out of it is followed and refused; uploads
cannot make symlinks, so only the operator could add one later.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.resources import resource_fields
from ..errors import Problem, UnknownNodeType

if TYPE_CHECKING:
    from ..core.workflow import Workflow
    from ..runtime.registry import NodeRegistry
    from .config import ServerConfig

__all__ = ["DataDir"]


class DataDir:
    """Where uploaded workflows' paths resolve, and what they never reach.

    Args:
        root: The directory (created with mode 0700 by `create`).
        protected: Files no path may name, wherever they are.
    """

    def __init__(self, root: str | Path, protected: tuple[Path, ...] = ()) -> None:
        self.root = Path(root).absolute()
        self._protected = protected

    @classmethod
    def of(cls, config: ServerConfig) -> DataDir:
        """The data directory of a server, protecting its database and token."""
        db = Path(config.db)
        protected = (
            db,
            *(
                db.with_name(db.name + suffix)
                for suffix in ("-wal", "-shm", "-journal")
            ),
            config.token_path,
        )
        return cls(config.data_path, protected)

    def create(self) -> None:
        """Make the directory (and its parents) if it does not exist."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def resolve(self, value: str) -> str:
        """The absolute path ``value`` names inside the directory.

        Raises:
            ValueError: ``value`` is absolute, climbs out with ``..``, leaves
                the directory through a symlink, or names a protected file;
                the message says which.
        """
        if not value or "\x00" in value:
            msg = "a path must be a non-empty name without NUL characters"
            raise ValueError(msg)
        path = Path(value)
        if path.is_absolute() or value.startswith("~"):
            msg = (
                f"{value!r} is absolute; paths are relative to the server's data "
                "directory"
            )
            raise ValueError(msg)
        if ".." in path.parts:
            msg = f"{value!r} climbs out of the server's data directory with '..'"
            raise ValueError(msg)
        root = Path(os.path.realpath(self.root))
        target = Path(os.path.realpath(root / path))
        if target == root or not target.is_relative_to(root):
            msg = f"{value!r} leaves the server's data directory (through a symlink)"
            raise ValueError(msg)
        for protected in self._protected:
            if target == Path(os.path.realpath(protected)):
                msg = f"{value!r} is one of the server's own files"
                raise ValueError(msg)
        return str(target)

    def confine(
        self, workflow: Workflow, registry: NodeRegistry
    ) -> tuple[Workflow, list[Problem]]:
        """The workflow with every file path resolved inside the directory.

        Configs that do not decode are left as they are: validation reports
        them.

        Returns:
            The rewritten workflow, and a problem for each path refused.
        """
        problems: list[Problem] = []
        nodes = []
        for decl in workflow.nodes:
            raw = self._confine_node(
                decl.id, decl.type, decl.config, registry, problems
            )
            nodes.append(
                decl
                if raw is decl.config
                else msgspec.structs.replace(decl, config=raw)
            )
        checkpoint = workflow.checkpoint
        if checkpoint is not None:
            try:
                path = self.resolve(checkpoint.path)
            except ValueError as exc:
                problems.append(Problem(str(exc), field="checkpoint.path"))
            else:
                checkpoint = msgspec.structs.replace(checkpoint, path=path)
        workflow = msgspec.structs.replace(workflow, nodes=nodes, checkpoint=checkpoint)
        return workflow, problems

    def _confine_node(
        self,
        node_id: str,
        type_id: str,
        raw: dict[str, Any],
        registry: NodeRegistry,
        problems: list[Problem],
    ) -> dict[str, Any]:
        try:
            config = registry.get(type_id).decode_config(raw)
        except (UnknownNodeType, ValueError, TypeError):
            return raw  # validation reports these
        if config is None:
            return raw
        paths = [f for f in resource_fields(config) if f.kind == "path"]
        if not paths:
            return raw
        out = copy.deepcopy(raw)
        for found in paths:
            try:
                resolved = self.resolve(found.value)
            except ValueError as exc:
                problems.append(
                    Problem(str(exc), node=node_id, field=f"config.{found.path}")
                )
                continue
            _set(out, found.keys, resolved)
        return out


def _set(raw: Any, keys: tuple[str | int, ...], value: str) -> None:
    """Set ``raw[k1][k2]... = value``, making the dicts a default left out."""
    for key in keys[:-1]:
        if isinstance(raw, dict) and key not in raw:
            raw[key] = {}
        raw = raw[key]
    raw[keys[-1]] = value
