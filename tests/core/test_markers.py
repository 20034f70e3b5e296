"""Marked config fields are found through annotations, nested structs included."""

from __future__ import annotations

import msgspec

from flowstream import Expr, FilePath, ListenHost, OutboundUrl
from flowstream.core.expr import expr_fields
from flowstream.core.markers import MarkedField, marked_fields
from flowstream.core.resources import resource_fields


class Inner(msgspec.Struct, frozen=True, rename="camel"):
    store_path: FilePath
    url: OutboundUrl | None = None


class Outer(msgspec.Struct, frozen=True):
    files: list[FilePath]
    named: dict[str, FilePath]
    inner: Inner
    host: ListenHost = "127.0.0.1"
    expr: Expr = "x"
    plain: str = "not marked"
    maybe: Inner | None = None


def test_every_marked_value_is_found_with_its_raw_keys() -> None:
    config = Outer(
        files=["a", "b"], named={"k": "c"}, inner=Inner(store_path="d", url="http://h/")
    )
    assert list(resource_fields(config)) == [
        MarkedField("files[0]", ("files", 0), "path", "a"),
        MarkedField("files[1]", ("files", 1), "path", "b"),
        MarkedField("named.k", ("named", "k"), "path", "c"),
        # Raw keys follow the struct's renames: they address the config dict.
        MarkedField("inner.store_path", ("inner", "storePath"), "path", "d"),
        MarkedField("inner.url", ("inner", "url"), "url", "http://h/"),
        MarkedField("host", ("host",), "listen", "127.0.0.1"),
    ]
    assert list(expr_fields(config)) == [("expr", "cel", "x")]
    kinds = {f.kind for f in marked_fields(config)}
    assert kinds == {"path", "url", "listen", "cel"}
