"""Tagged-union schemas for JSON Lines: one record type per value of a tag field.

``file.source`` may declare ``variants`` (tag value -> field name -> type
name, the type names of `connectors._records`) with ``tag_field``: each line
is then decoded by one typed msgspec decoder into the variant its tag names,
validated on the way, and handed on as a plain dict (tag field included).
Lines whose tag names no variant, or whose fields break their variant, are
bad lines (the ``error`` port), the others of the batch go on.

The variants are built as tagged `msgspec.Struct` types: msgspec picks the
variant from the tag while it decodes, with no second pass; the records are
turned into dicts right after (`msgspec.to_builtins`, which keeps the tag),
because values inside the graph are plain objects.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._records import TYPE_NAMES

__all__ = ["FLAT_TYPES", "is_flat", "variants_type"]

FLAT_TYPES = frozenset({"str", "int", "float", "bool", "bytes"})
"""Type names that hold no nesting: a schema of only these bounds a record's depth."""


def _field(name: str, type_name: str, variant: str) -> tuple[str, Any, Any]:
    optional = type_name.endswith("?")
    base = TYPE_NAMES.get(type_name.rstrip("?"))
    if base is None:
        known = ", ".join(TYPE_NAMES)
        msg = (
            f"variant {variant!r}, field {name!r}: unknown type {type_name!r} "
            f"(known: {known})"
        )
        raise ValueError(msg)
    if optional:
        # UNSET fields are left out of the dict, like a missing NotRequired.
        return (name, base | msgspec.UnsetType, msgspec.UNSET)
    return (name, base, msgspec.NODEFAULT)


def variants_type(tag_field: str, variants: dict[str, dict[str, str]]) -> Any:
    """Build the tagged union that decodes records of ``variants``.

    Args:
        tag_field: The field whose value names the variant (``type``).
        variants: Tag value -> field name -> type name (a trailing ``?``:
            optional).

    Returns:
        The union of one tagged `msgspec.Struct` per variant.

    Raises:
        ValueError: No variant, a type name is unknown, or a variant
            declares the tag field itself.
    """
    if not variants:
        msg = "variants must name at least one variant"
        raise ValueError(msg)
    types: list[Any] = []
    for tag, fields in variants.items():
        if tag_field in fields:
            msg = (
                f"variant {tag!r} declares the tag field {tag_field!r}; the tag "
                "is implied (its value is the variant's name)"
            )
            raise ValueError(msg)
        required: list[tuple[str, Any]] = []
        optional: list[tuple[str, Any, Any]] = []
        for name, type_name in fields.items():
            spec = _field(name, type_name, tag)
            if spec[2] is msgspec.NODEFAULT:
                required.append((spec[0], spec[1]))
            else:
                optional.append(spec)
        types.append(
            msgspec.defstruct(
                f"Variant_{len(types)}",
                [*required, *optional],
                tag_field=tag_field,
                tag=tag,
            )
        )
    union: Any = types[0]
    for t in types[1:]:
        union = union | t
    return union


def is_flat(variants: dict[str, dict[str, str]]) -> bool:
    """Whether every field of every variant is a scalar (no nesting possible)."""
    return all(
        t.rstrip("?") in FLAT_TYPES
        for fields in variants.values()
        for t in fields.values()
    )
