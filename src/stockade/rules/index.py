"""Rules indexed by what an event is (audit: verb and resource; sensor: event type), so that an event is
tested only against the rules that can match it, all of them in one compiled function (a rule group)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stockade.rules.conditions import compile_group


@dataclass(slots=True)
class Group:
    """The rules an index entry holds, compiled into one function (``fire``: the rules whose condition holds
    on an event), and what they read of the parts an event's parse may defer (``wants``; None: the whole event)."""

    rules: list[Any]
    fire: Callable[[Any], list[Any]]
    wants: frozenset[str] | None


WantsOf = Callable[[list[Any]], "frozenset[str] | None"]


class Index:
    """Rules by key: ``dims`` names the rule attributes (lists of values, or None for any value) that an event's
    key is matched against, in order; ``wants_of`` tells from a group's rules what it reads of the deferrable
    parts of an event (nothing by default)."""

    def __init__(self, rules: list[Any], dims: tuple[str, ...], wants_of: WantsOf | None = None) -> None:
        self.rules = rules
        self.dims = dims
        self.wants_of = wants_of
        self._cache: dict[tuple[str, ...], Group | None] = {}
        self._groups: dict[tuple[int, ...], Group] = {}  # index entries holding the same rules share one

    def lookup(self, *key: str) -> list[Any]:
        group = self.group(*key)
        return group.rules if group is not None else []

    def group(self, *key: str) -> Group | None:
        """The compiled rules for ``key``; None when no rule can match."""
        try:
            return self._cache[key]
        except KeyError:
            pass
        hit = [r for r in self.rules if self._holds(r, key)]
        group = self._compile(hit) if hit else None
        if len(self._cache) < 65536:  # bounded: the keys seen
            self._cache[key] = group
        return group

    def _holds(self, rule: Any, key: tuple[str, ...]) -> bool:
        """Whether ``rule`` can match an event with ``key``: each of its dims is None (any) or holds the value."""
        return all((vals := getattr(rule, d)) is None or k in vals for d, k in zip(self.dims, key, strict=True))

    def wants(self, *key: str) -> frozenset[str] | None:
        """What the rules for ``key`` read of an event's deferrable parts."""
        group = self._cache.get(key, _MISSING)  # the group's own lookup, inlined: once per event
        if group is _MISSING:
            group = self.group(*key)
        return group.wants if group is not None else _NOTHING

    def _compile(self, rules: list[Any]) -> Group:
        ids = tuple(id(r) for r in rules)
        group = self._groups.get(ids)
        if group is None:
            wants = self.wants_of(rules) if self.wants_of is not None else _NOTHING
            fire: Callable[[Any], list[Any]]
            if any(getattr(r, "tree", None) is None for r in rules):  # rules built by hand, not by read_rule

                def fire(ev: Any, rules: list[Any] = rules) -> list[Any]:
                    return [r for r in rules if r.condition(ev)]

            else:
                fire = compile_group([r.tree for r in rules], list(rules))
            group = self._groups[ids] = Group(rules, fire, wants)
        return group


_NOTHING: frozenset[str] = frozenset()
_MISSING: Any = object()
