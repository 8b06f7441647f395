"""The parsed tree by field path: plain values for jsonschema, positions, field names.

to_plain() turns ruamel's round-trip objects into plain JSON-like values (aliases expanded,
within the value and depth limits); position() finds a field path's line and column in the
ruamel tree again, for every later diagnostic; field_name() names the path in it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

from kubevipd.config.yaml_source import MAX_DEPTH, MAX_VALUES, TOO_DEEP

PathItem = str | int
FieldPath = tuple[PathItem, ...]


def field_name(path: Sequence[PathItem]) -> str:
    """``('announce', 'bgp', 'peers', 0, 'as')`` -> ``announce.bgp.peers[0].as``.

    A key that is not printable text on one line (``"a\\nb"``, ``""``, a lone surrogate) is
    shown quoted and escaped, as ``vip["a\\nb"]``: a diagnostic is always one line.
    """
    out = ""
    for item in path:
        if isinstance(item, int):
            out += f"[{item}]"
        elif not item or not item.isprintable():
            out += f"[{json.dumps(item)}]"
        else:
            out += f".{item}" if out else item
    return out


class TooLarge(Exception):
    """A document that is no config: too many values, too deep, or an alias inside itself."""

    def __init__(self, path: FieldPath, message: str, top_level: bool = False) -> None:
        self.path = path  # where it was found (the position); top_level: name its section only
        self.message = message
        self.top_level = top_level


def to_plain(root: Any) -> Any:
    """ruamel's round-trip objects as plain JSON-like values for jsonschema: a tree, aliases
    expanded, keys as strings. Dates and tagged values are left as they are (the schema
    rejects them)."""
    count = 0
    open_nodes: list[int] = []  # the containers being converted, outermost first
    path: list[PathItem] = []

    def plain(node: Any) -> Any:
        nonlocal count
        count += 1
        if count > MAX_VALUES:
            msg = (
                f"holds more than {MAX_VALUES} values (YAML aliases expanded); a kubevipd "
                "config holds a few dozen"
            )
            raise TooLarge(tuple(path[:1]), msg)
        if not isinstance(node, Mapping | list):
            return _scalar(node)
        if id(node) in open_nodes:
            raise TooLarge(tuple(path), "YAML: an alias (*) refers to a value that contains it")
        if len(open_nodes) >= MAX_DEPTH:
            raise TooLarge(tuple(path), TOO_DEEP, top_level=True)
        open_nodes.append(id(node))
        try:
            if isinstance(node, list):
                return [item(i, v) for i, v in enumerate(node)]
            return {(name := _key_name(k)): item(name, v) for k, v in node.items()}
        finally:
            open_nodes.pop()

    def item(key: PathItem, value: Any) -> Any:
        path.append(key)
        try:
            return plain(value)
        finally:
            path.pop()

    return plain(root)


def _scalar(node: Any) -> Any:
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node  # dates and tagged values: left as they are, the schema rejects them


def _key_name(key: Any) -> str:
    """A mapping key as the schema sees it: ``null``, ``true`` or ``1`` as written."""
    if isinstance(key, str):
        return str(key)
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


_MISSING = object()


def _find_key(node: Mapping[Any, Any], name: str) -> Any:
    """The key of ``node`` that the plain document calls ``name`` (``1`` for "1")."""
    if name in node:
        return name
    return next((k for k in node if not isinstance(k, str) and _key_name(k) == name), _MISSING)


def position(root: Any, path: FieldPath, at_key: bool = False) -> tuple[int, int]:
    """1-based line and column of the value (or key) at ``path`` in the ruamel tree."""
    line, col = 0, 0
    node = root
    for i, key in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, Mapping) and isinstance(key, str):
            orig = _find_key(node, key)
            if orig is _MISSING:
                break
            pos = _key_position(node, orig, (last and at_key) or node[orig] is None)
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            lc = getattr(node, "lc", None)
            pos = lc.item(key) if lc is not None else None
        else:
            break
        if pos is None:
            break
        line, col = pos
        node = node[orig] if isinstance(node, Mapping) else node[key]
    return line + 1, col + 1


def _key_position(node: Mapping[Any, Any], key: Any, at_key: bool) -> tuple[int, int] | None:
    """(line, column) of a key or its value, 0-based; a key merged in with ``<<: *anchor`` is
    found where the anchored mapping sets it."""
    # ruamel 0.17/0.18 keep (index, mapping) pairs in ``merge``; 0.19 the mappings themselves.
    merged = [m[1] if isinstance(m, tuple) else m for m in getattr(node, "merge", ())]
    sources = [node, *merged]
    for source in sources:
        data = getattr(getattr(source, "lc", None), "data", None)
        if isinstance(data, Mapping) and key in data:
            lc = source.lc
            pos = lc.key(key) if at_key else lc.value(key)
            return cast(tuple[int, int], tuple(pos))
    return None
