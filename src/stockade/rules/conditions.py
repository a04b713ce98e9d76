"""The condition language every engine's rules are written in, and its compiler.

Conditions:  {all: [...]}, {any: [...]}, {not: {...}}, {some: PATH, where: {...}} (an element of the list at
PATH satisfies the inner condition as a whole), or {field: PATH, op: OP, value: V}
PATH is dotted, with [*] over lists and {} over a mapping's entries, each seen as {key, value}; a key that holds
dots is quoted (metadata.labels."pod-security.kubernetes.io/enforce"). A path that reaches several values passes
when any of them does.
OP: eq, ne, in, not_in, exists, absent, truthy, falsy, startswith, endswith, contains, icontains
(case-insensitive substring), matches, glob (shell pattern, or any of a list), gt, lt, not_subset (a list with
an element outside ``value``), missing_any (a list lacking one of ``value``), path_under (a file path, normalised,
that is one of the directories in ``value`` or below one: /home/admin is under /home, /homework is not; "/" is
only itself), and over lists backed by data files (rules/lists.py): in_cidr, domain_in, contains_any.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Callable
from typing import Any

import orjson

from stockade.rules.errors import RuleError
from stockade.rules.lists import DataList, as_data_list, valid_entry
from stockade.rules.paths import root_paths, scalar_prefix, split_path

OPS = frozenset({
    "eq", "ne", "in", "not_in", "exists", "absent", "truthy", "falsy", "startswith", "endswith", "contains",
    "matches", "gt", "lt", "not_subset", "missing_any", "glob", "icontains", "in_cidr", "domain_in", "contains_any",
    "path_under",
})  # fmt: skip
LIST_OPS = {"in_cidr": "cidr", "domain_in": "domain", "contains_any": "string"}  # op -> the kind of list it takes


def check_condition(cond: Any, where: str) -> None:
    if not isinstance(cond, dict) or len(cond) == 0:
        raise RuleError(f"{where}: a condition must be a mapping")
    if "all" in cond or "any" in cond:
        items = cond.get("all", cond.get("any"))
        if not isinstance(items, list) or not items:
            raise RuleError(f"{where}: all/any needs a non-empty list")
        for i, c in enumerate(items):
            check_condition(c, f"{where}[{i}]")
    elif "not" in cond:
        check_condition(cond["not"], f"{where}.not")
    elif "some" in cond:
        if not isinstance(cond["some"], str):
            raise RuleError(f"{where}: some needs a path")
        check_condition(cond.get("where"), f"{where}.where")
    else:
        if not isinstance(cond.get("field"), str) or cond.get("op") not in OPS:
            raise RuleError(f"{where}: needs 'field' and an 'op' among {sorted(OPS)}")
        if cond["op"] in ("startswith", "endswith") and not _text_or_texts(cond.get("value")):
            raise RuleError(f"{where}: {cond['op']} needs a string or a list of strings")
        if cond["op"] in LIST_OPS:
            check_list_value(cond["op"], cond.get("value"), where)
        if cond["op"] == "matches":
            try:
                re.compile(str(cond.get("value", "")))
            except re.error as exc:
                raise RuleError(f"{where}: bad regular expression ({exc})") from None


def check_list_value(op: str, value: Any, where: str) -> None:
    """in_cidr, domain_in and contains_any take a list (inline or from a data file) or one string; an inline
    entry that is not of the op's kind is an error (a data file's are counted and skipped as it loads)."""
    if isinstance(value, DataList):
        return
    if not _text_or_texts(value):
        raise RuleError(f"{where}: {op} needs a list of strings, a string or a $list")
    for v in [value] if isinstance(value, str) else value:
        if valid_entry(LIST_OPS[op], v) is None:
            raise RuleError(f"{where}: {op}: {v!r} is not a {LIST_OPS[op]}")


def _text_or_texts(value: Any) -> bool:
    """A string or a list of strings (what startswith and endswith take)."""
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(w, str) for w in value))


def _test(op: str, v: Any, want: Any) -> bool:
    """The ops _CodeGen.test does not inline (most are: this is for the odd values, such as ``in`` a string)."""
    if op == "in":
        return v in want
    if op == "not_in":
        return v not in want
    if op in ("startswith", "endswith"):
        return isinstance(v, str) and getattr(v, op)(tuple(want) if isinstance(want, list) else want)
    if op in ("gt", "lt"):
        return isinstance(v, int | float) and not isinstance(v, bool) and (v > want if op == "gt" else v < want)
    if op == "not_subset":
        return isinstance(v, list) and any(x not in want for x in v)
    if op == "missing_any":
        return not isinstance(v, list) or any(w not in v for w in want)
    if op == "path_under":
        return isinstance(v, str) and _under(v, want)
    raise RuleError(f"unknown op {op}")


@functools.lru_cache(maxsize=4096)
def _dirs(want: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """The exact paths and the directory prefixes (with their slash) of a path_under list."""
    norm = [posixpath.normpath(str(w)) if str(w) else "" for w in want]
    return frozenset(norm), tuple(n + "/" for n in norm if n not in ("/", "//", ""))


def _under(v: str, want: Any) -> bool:
    """``v`` (a path written any way: //etc/./kubernetes/, /etc/../home/x) equals or lies below one of ``want``."""
    return _under_dirs(v, *_dirs(tuple(str(w) for w in want) if isinstance(want, list) else (str(want),)))


def _under_dirs(v: str, exact: frozenset[str], prefixes: tuple[str, ...]) -> bool:
    if not v.startswith("/"):
        return False
    if "//" in v or "/." in v or (v.endswith("/") and v != "/"):  # only these need normalising (normpath is slow)
        v = "/" + posixpath.normpath(v).lstrip("/")  # normpath keeps a leading "//"
    return v in exact or v.startswith(prefixes)


def holds(cond: dict[str, Any], node: Any) -> bool:
    """Whether ``cond`` holds on ``node`` (compiles it each time: rules keep theirs compiled)."""
    return compile_condition(cond)(node)


Pred = Callable[[Any], bool]


def compile_condition(cond: dict[str, Any]) -> Pred:
    """A condition as one Python function, built once per rule (Falco compiles its rule conditions too).

    The condition tree becomes the source of a single expression, with paths (``[*]`` and ``{}`` included) walked
    inline and each op specialised (sets for membership, compiled regular expressions), then compiled by
    ``compile``: written by hand because no library compiles this rule language, and calling a closure per node
    was most of the audit engine's time. The rarer ops call _test."""
    gen = _CodeGen()
    expr = gen.expr(cond)
    fn: Pred = gen.define("_cond", f"    return bool({expr})\n", "<rule condition>")
    return fn


def compile_group(conds: list[dict[str, Any]], tags: list[Any]) -> Callable[[Any], list[Any]]:
    """Several conditions as one function of a dict (an event) returning the tags of those that hold, in order:
    what a rule index entry runs for each event. One call instead of one per rule, and what the conditions
    share is worked out once per node: a top-level conjunct common to two or more conditions (a macro such
    as "the request succeeded") is evaluated at most once, and a plain path read by two or more tests
    ("user.username") is resolved once. Same results as compile_condition on each (tests/test_conditions.py
    checks this)."""
    gen = _CodeGen()
    gen.root_dict = True
    conjuncts = [_conjuncts(c) for c in conds]
    keys = [[orjson.dumps(c, option=orjson.OPT_SORT_KEYS, default=_list_key) for c in cs] for cs in conjuncts]
    uses: dict[bytes, int] = {}
    for ks in keys:
        for k in set(ks):
            uses[k] = uses.get(k, 0) + 1
    paths = [scalar_prefix(p) for c in conds for p in root_paths(c)]
    counts: dict[tuple[str, ...], int] = {}
    for path in paths:
        if path:
            counts[path] = counts.get(path, 0) + 1
    prologue: list[str] = []
    for path, used in counts.items():
        if used < 2:
            continue
        var = gen.var()
        gen.hoisted[path] = var
        prologue.append(f"    {var} = n.get({gen.const(path[0])})")
        for part in path[1:]:
            prologue.append(f"    {var} = {var}.get({gen.const(part)}) if isinstance({var}, dict) else None")
    shared: dict[bytes, str] = {}
    lines: list[str] = []
    for cs, ks, tag in zip(conjuncts, keys, tags, strict=True):
        terms = []
        for c, k in zip(cs, ks, strict=True):
            if uses[k] < 2:
                terms.append(gen.expr(c))
                continue
            if k not in shared:
                shared[k] = gen.var()
                prologue.append(f"    {shared[k]} = None")
            var = shared[k]
            terms.append(f"({var} if {var} is not None else ({var} := bool({gen.expr(c)})))")
        lines.append(f"    if {' and '.join(terms) or 'True'}:\n        _out.append({gen.const(tag)})")
    body = "\n".join(prologue) + "\n    _out = []\n" + "\n".join(lines) + "\n    return _out\n"
    fn: Callable[[Any], list[Any]] = gen.define("_group", body, "<rule group>")
    return fn


def _list_key(value: Any) -> str:
    """A data-file list in a condition's JSON (for comparing conditions): its key, not its entries."""
    if isinstance(value, DataList):
        return value.key
    raise TypeError(type(value).__name__)


def _conjuncts(cond: dict[str, Any]) -> list[dict[str, Any]]:
    """A condition as the list of conditions that must all hold (nested ``all`` flattened)."""
    if "all" in cond:
        return [x for c in cond["all"] for x in _conjuncts(c)]
    return [cond]


class _CodeGen:
    """Source of one condition; values from the rules go into ``consts`` by name, never into the source text."""

    def __init__(self) -> None:
        self.consts: dict[str, Any] = {}
        self.n = 0
        self.hoisted: dict[tuple[str, ...], str] = {}  # plain paths from the node, resolved once into a variable
        self.root_dict = False  # the node is known to be a dict (rule groups run on events)
        self.helpers: list[str] = []  # source of the functions ``loop`` calls

    def define(self, name: str, body: str, where: str) -> Any:
        """The function ``name(n)`` with this body (and the helpers it calls), compiled."""
        src = "".join(self.helpers) + f"def {name}(n):\n" + body
        ns: dict[str, Any] = {"isinstance": isinstance, "dict": dict, "str": str, "int": int, "float": float,
                              "bool": bool, **self.consts}
        exec(compile(src, where, "exec"), ns)  # generated here: rule values are in ns, not in src
        return ns[name]

    def const(self, value: Any) -> str:
        self.n += 1
        name = f"_k{self.n}"
        self.consts[name] = value
        return name

    def var(self) -> str:
        self.n += 1
        return f"_v{self.n}"

    def expr(self, cond: dict[str, Any], node: str = "n") -> str:
        if "all" in cond:
            subs = self.joined(cond["all"], node, "and")
            return "(" + " and ".join(subs) + ")" if subs else "True"
        if "any" in cond:
            subs = self.joined(cond["any"], node, "or")
            return "(" + " or ".join(subs) + ")" if subs else "False"
        if "not" in cond:
            return f"(not {self.expr(cond['not'], node)})"
        if "some" in cond:
            where = cond["where"]
            return self.walk(node, split_path(cond["some"]), lambda x: self.expr(where, x))
        parts = split_path(cond["field"])
        op = cond["op"]
        if op == "exists":
            return self.walk(node, parts, lambda _x: "True")
        if op == "absent":
            return f"(not {self.walk(node, parts, lambda _x: 'True')})"
        want = cond.get("value")
        return self.walk(node, parts, lambda x: self.test(op, want, x))

    def joined(self, conds: list[dict[str, Any]], node: str, join: str) -> list[str]:
        """The operands of an ``all`` (join "and") or ``any`` ("or"): tests of one plain path (no ``[*]`` or
        ``{}``) share one walk to its value, since a plain path has at most one value and every op but exists and
        absent needs it (twelve icontains on a ConfigMap entry's key were twelve lookups and twelve lower())."""
        by_path: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for c in conds:
            if "field" in c and c.get("op") not in ("exists", "absent"):
                parts = split_path(c["field"])
                if scalar_prefix(parts) == parts:  # a plain path
                    by_path.setdefault(parts, []).append(c)
        out: list[str] = []
        done: set[tuple[str, ...]] = set()
        for c in conds:
            parts = split_path(c["field"]) if "field" in c else ()
            same = by_path.get(parts) if "field" in c else None
            if same is None or len(same) < 2 or c not in same:
                out.append(self.expr(c, node))
            elif parts not in done:
                done.add(parts)
                out.append(self.walk(node, parts, functools.partial(self.tests, same, join=join)))
        return out

    def glob(self, pats: list[str], v: str) -> str:
        """fnmatchcase against any of ``pats``: the usual shapes (``a``, ``a*``, ``*a``, ``*a*``) as string
        methods, the others as one regular expression (an alternation of a dozen translated globs took 3 us per
        image, a tenth of an audit event's time)."""
        def literal(text: str) -> bool:
            return not any(m in text for m in "*?[")

        exact, prefixes, suffixes, infixes, other = [], [], [], [], []
        for p in pats:
            if literal(p):
                exact.append(p)
            elif p.endswith("*") and literal(p[:-1]):
                prefixes.append(p[:-1])
            elif p.startswith("*") and literal(p[1:]):
                suffixes.append(p[1:])
            elif len(p) >= 2 and p[0] == p[-1] == "*" and literal(p[1:-1]):
                infixes.append(p[1:-1])
            else:
                other.append(p)
        terms = []
        if exact:
            terms.append(f"{v} in {self.const(frozenset(exact))}")
        if prefixes:
            terms.append(f"{v}.startswith({self.const(tuple(prefixes))})")
        if suffixes:
            terms.append(f"{v}.endswith({self.const(tuple(suffixes))})")
        terms += [f"{self.const(w)} in {v}" for w in infixes]
        if other:
            import fnmatch

            grx = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in other))
            terms.append(f"{self.const(grx.match)}({v}) is not None")
        return f"(isinstance({v}, str) and ({' or '.join(terms) or 'False'}))"

    def tests(self, conds: list[dict[str, Any]], v: str, join: str) -> str:
        """Several ops on one value joined by ``join``; the icontains among them lower the value once."""
        terms = [self.test(c["op"], c.get("value"), v) for c in conds if c["op"] != "icontains"]
        lows = [str(c.get("value")).lower() for c in conds if c["op"] == "icontains"]
        if len(lows) == 1:
            terms.append(self.test("icontains", lows[0], v))
        elif lows:
            low = self.var()
            inside = f" {join} ".join(f"{self.const(w)} in {low}" for w in lows)
            terms.append(f"(isinstance({v}, str) and ({low} := {v}.lower()) is not None and ({inside}))")
        return "(" + f" {join} ".join(terms) + ")"

    def walk(self, node: str, parts: tuple[str, ...], leaf: Callable[[str], str]) -> str:
        """True when some value at ``parts`` below ``node`` satisfies ``leaf`` (as paths.resolve walks: a step needs a
        dict holding a non-null value; ``[*]`` goes into each list item, ``{}`` into each map entry as
        {"key", "value"})."""
        if not parts:
            return leaf(node)
        if node == "n" and self.hoisted:
            for i in range(len(parts), 0, -1):
                var = self.hoisted.get(parts[:i])
                if var is not None:
                    return f"({var} is not None and {self.walk(var, parts[i:], leaf)})"
        head, rest = parts[0], parts[1:]
        mode = "list" if head.endswith("[*]") else "map" if head.endswith("{}") else ""
        key = head[:-3] if mode == "list" else head[:-2] if mode == "map" else head
        v, x = self.var(), self.var()
        get = f"({v} := {node}.get({self.const(key)})) is not None"
        if not (node == "n" and self.root_dict):
            get = f"isinstance({node}, dict) and {get}"
        if mode == "list":
            return f"({get} and isinstance({v}, list) and {self.loop(v, x, rest, leaf, False)})"
        if mode == "map":
            return f"({get} and isinstance({v}, dict) and {self.loop(v, x, rest, leaf, True)})"
        return f"({get} and {self.walk(v, rest, leaf)})"

    def loop(self, seq: str, x: str, rest: tuple[str, ...], leaf: Callable[[str], str], entries: bool) -> str:
        """A call of a helper function that tries each item of ``seq`` (each entry as {"key", "value"} with
        ``entries``): a plain loop costs half of ``any()`` over a generator, which was a tenth of the audit time."""
        body = self.walk(x, rest, leaf)
        name = f"_some{self.var()}"
        head = (f"    for _mk, _mv in _s.items():\n        {x} = {{'key': _mk, 'value': _mv}}\n" if entries
                else f"    for {x} in _s:\n")  # fmt: skip
        self.helpers.append(f"def {name}(_s):\n{head}        if {body}:\n            return True\n    return False\n")
        return f"{name}({seq})"

    def test(self, op: str, want: Any, v: str) -> str:
        """The op on variable ``v`` as an expression, specialised once (sets for membership, compiled regular
        expressions); the rarer ops call _test."""
        if op in ("in", "not_in") and isinstance(want, list) and not want:  # an empty list (a list left to set)
            return "False" if op == "in" else "True"
        if op in LIST_OPS:
            return f"{self.const(as_data_list(want, LIST_OPS[op]).matcher(op))}({v})"
        if op in ("in", "not_in") and isinstance(want, DataList):
            member = f"({v}.__hash__ is not None and {v} in {self.const(want.exact())})"
            return member if op == "in" else f"(not {member})"
        if op in ("in", "not_in") and isinstance(want, list):
            try:
                member = f"({v}.__hash__ is not None and {v} in {self.const(frozenset(want))})"
            except TypeError:  # unhashable values in the list: list membership
                member = f"({v} in {self.const(want)})"
            return member if op == "in" else f"(not {member})"
        if op == "eq":
            return f"({v} == {self.const(want)})"
        if op == "ne":
            return f"({v} != {self.const(want)})"
        if op == "matches":
            return f"(isinstance({v}, str) and {self.const(re.compile(str(want)).search)}({v}) is not None)"
        if op == "glob":
            return self.glob([str(p) for p in (want if isinstance(want, list) else [want])], v)
        if op == "icontains":
            return f"(isinstance({v}, str) and {self.const(str(want).lower())} in {v}.lower())"
        if op in ("lt", "gt") and isinstance(want, int | float) and not isinstance(want, bool):
            cmp = "<" if op == "lt" else ">"
            return f"(isinstance({v}, (int, float)) and not isinstance({v}, bool) and {v} {cmp} {self.const(want)})"
        if op in ("startswith", "endswith") and _text_or_texts(want):
            arg = self.const(tuple(want) if isinstance(want, list) else want)
            return f"(isinstance({v}, str) and {v}.{op}({arg}))"
        if op == "contains":  # an item of a list, or a substring of a string
            kinds = "(list, str)" if isinstance(want, str) else "list"
            return f"(isinstance({v}, {kinds}) and {self.const(want)} in {v})"
        if op in ("truthy", "falsy"):
            return f"bool({v})" if op == "truthy" else f"(not {v})"
        if op == "path_under":  # the directories normalised once, here
            exact, prefixes = _dirs(tuple(str(w) for w in (want if isinstance(want, list) else [want])))
            fn, dirs, pre = self.const(_under_dirs), self.const(exact), self.const(prefixes)
            return f"(isinstance({v}, str) and {fn}({v}, {dirs}, {pre}))"
        return f"{self.const(_test)}({self.const(op)}, {v}, {self.const(want)})"
