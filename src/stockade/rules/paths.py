"""Paths into a document (dotted, with ``[*]`` over lists and ``{}`` over a mapping's entries): split once,
resolved by walking, and found in conditions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=4096)
def split_path(path: str) -> tuple[str, ...]:
    """Dotted path to its parts; a part in double quotes may hold dots."""
    parts: list[str] = []
    for m in re.finditer(r'"([^"]*)"(\[\*\]|\{\})?|([^."]+)', path):
        parts.append(m.group(1) + (m.group(2) or "") if m.group(1) is not None else m.group(3))
    return tuple(parts)


def resolve(node: Any, parts: tuple[str, ...]) -> Iterator[Any]:
    """Every value at ``parts`` below ``node``: a step needs a dict holding a non-null value."""
    if not parts:
        yield node
        return
    head, rest = parts[0], parts[1:]
    if head.endswith("[*]"):
        key, mode = head[:-3], "list"
    elif head.endswith("{}"):
        key, mode = head[:-2], "map"
    else:
        key, mode = head, ""
    if not isinstance(node, dict) or key not in node or node[key] is None:
        return
    value = node[key]
    if mode == "list":
        for item in value if isinstance(value, list) else []:
            yield from resolve(item, rest)
    elif mode == "map":
        for k, v in value.items() if isinstance(value, dict) else []:
            yield from resolve({"key": k, "value": v}, rest)
    else:
        yield from resolve(value, rest)


def scalar_prefix(parts: tuple[str, ...]) -> tuple[str, ...]:
    """The leading plain keys of a path (up to its first ``[*]`` or ``{}`` step)."""
    out: list[str] = []
    for p in parts:
        if p.endswith(("[*]", "{}")):
            break
        out.append(p)
    return tuple(out)


def root_paths(cond: Any) -> Iterator[tuple[str, ...]]:
    """The split path of every test and ``some`` that ``cond`` makes from the node itself (the paths inside a
    ``some`` are its items')."""
    if not isinstance(cond, dict):
        return
    for key in ("all", "any"):
        if key in cond:
            for c in cond[key]:
                yield from root_paths(c)
            return
    if "not" in cond:
        yield from root_paths(cond["not"])
        return
    path = cond.get("some", cond.get("field"))
    if isinstance(path, str):
        yield split_path(path)


