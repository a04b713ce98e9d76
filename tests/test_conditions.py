"""The rule-condition compiler (posture, audit and sensor rules share it) against a plain interpreter of the
condition language written here from its documentation (docs/posture.md, Conditions): random conditions on
random documents must give the same answer."""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.rules import DataList, compile_condition, compile_group

KEYS = ["a", "b", "c"]
STRINGS = ["x", "xy", "Yx", "", "a.b", "10.1.2.3", "2001:db8::7", "Pool.Example.", "b.a.b"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from(STRINGS))
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)),
    max_leaves=12,
)
PATHS = st.lists(
    st.tuples(st.sampled_from(KEYS), st.sampled_from(["", "[*]", "{}"])), min_size=0, max_size=3
).map(lambda parts: ".".join(k + m for k, m in parts))
CIDRS = ["10.0.0.0/8", "10.1.2.3", "10.1.2.2/31", "0.0.0.0/0", "2001:db8::/32", "::1/128", "192.168.0.0/16"]
DOMAINS = ["example", "pool.example", "a.b", "x", "B", "xy."]
WORDS = ["x", "y", "Y", ".", "xy", "a.", "1.2", "b.a", "Exa", "::", "ol", "q", "zz"]


def listed(pool: list[str], kind: str, most: int = 3) -> st.SearchStrategy[Any]:
    """A list of entries from ``pool``: inline (a YAML list) or as a data file's list would be (DataList)."""
    entries = st.lists(st.sampled_from(pool), max_size=most)
    return st.one_of(entries, entries.map(lambda xs: DataList(xs, kind)))


GLOBS = ["x*", "?x", "*", "**", "*x*", "*y", "x", "a.b", "*[xY]*", "x*y", ["x*", "*y", "Yx"], []]
LEAF_OPS = {
    "eq": SCALARS, "ne": SCALARS, "in": st.lists(SCALARS, max_size=3), "not_in": st.lists(SCALARS, max_size=3),
    "truthy": st.none(), "falsy": st.none(), "exists": st.none(), "absent": st.none(),
    "startswith": st.sampled_from(["x", "Y", "", ["x", "Y"]]), "endswith": st.sampled_from(["x", "y", ["y", "x"]]),
    "contains": st.sampled_from(["x", 1, True]), "icontains": st.sampled_from(["X", "y"]),
    "matches": st.sampled_from(["^x", "y$", "a\\.b"]), "glob": st.sampled_from(GLOBS),
    "gt": st.integers(-1, 1), "lt": st.integers(-1, 1),
    "in_cidr": listed(CIDRS, "cidr"), "domain_in": listed(DOMAINS, "domain"),
    # from 8 strings on, contains_any runs one Aho-Corasick automaton
    "contains_any": st.one_of(listed(WORDS, "string"), listed(WORDS, "string", 12).filter(lambda w: len(w) >= 8)),
}  # fmt: skip
LEAF_OPS["in"] = st.one_of(LEAF_OPS["in"], listed(STRINGS, "string"))
LEAF_OPS["not_in"] = st.one_of(LEAF_OPS["not_in"], listed(STRINGS, "string"))


@st.composite
def leaf(draw: Any) -> dict[str, Any]:
    op = draw(st.sampled_from(sorted(LEAF_OPS)))
    return {"field": draw(PATHS), "op": op, "value": draw(LEAF_OPS[op])}


CONDS = st.recursive(
    leaf(),
    lambda inner: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(inner, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(inner, max_size=3)),
        st.builds(lambda x: {"not": x}, inner),
        st.builds(lambda p, w: {"some": p, "where": w}, PATHS.filter(bool), inner),
    ),
    max_leaves=6,
)


def values(node: Any, path: str) -> list[Any]:
    """The documented path semantics: a step needs a mapping with a non-null value; [*] each list item, {} each
    map entry as {key, value}; an empty path is the node itself."""
    out = [node]
    for step in path.split(".") if path else []:
        key, mode = (step[:-3], "list") if step.endswith("[*]") else (step[:-2], "map") if step.endswith("{}") else (
            step, "")  # fmt: skip
        nxt: list[Any] = []
        for n in out:
            if not isinstance(n, dict) or n.get(key) is None:
                continue
            v = n[key]
            if mode == "list":
                nxt += v if isinstance(v, list) else []
            elif mode == "map":
                nxt += [{"key": k, "value": x} for k, x in v.items()] if isinstance(v, dict) else []
            else:
                nxt.append(v)
        out = nxt
    return out


def op_holds(op: str, v: Any, want: Any) -> bool:
    if op == "eq":
        return bool(v == want)
    if op == "ne":
        return bool(v != want)
    if op in ("in", "not_in"):
        inside = any(v == w for w in list(want))
        return inside if op == "in" else not inside
    if op == "truthy":
        return bool(v)
    if op == "falsy":
        return not v
    if op in ("startswith", "endswith"):  # a list of prefixes: any of them
        return isinstance(v, str) and any(getattr(v, op)(w) for w in (want if isinstance(want, list) else [want]))
    if op == "contains":
        return (isinstance(v, list) and want in v) or (isinstance(v, str) and isinstance(want, str) and want in v)
    if op == "icontains":
        return isinstance(v, str) and want.lower() in v.lower()
    if op == "matches":
        return isinstance(v, str) and re.search(want, v) is not None
    if op == "glob":  # a list of patterns: any of them
        pats = want if isinstance(want, list) else [want]
        return isinstance(v, str) and any(fnmatch.fnmatchcase(v, w) for w in pats)
    if op == "in_cidr":  # an IP address inside one of the networks (of its own family)
        try:
            addr = ipaddress.ip_address(v) if isinstance(v, str) else None
        except ValueError:
            return False
        nets = [ipaddress.ip_network(w, strict=False) for w in want]
        return addr is not None and any(addr.version == n.version and addr in n for n in nets)
    if op == "domain_in":  # one of the domains or a name below one; case and a trailing dot do not count
        def norm(d: str) -> str:
            return d.strip().lower().rstrip(".")

        doms = [norm(w) for w in want if norm(w)]
        return isinstance(v, str) and bool(norm(v)) and any(norm(v) == d or norm(v).endswith("." + d) for d in doms)
    if op == "contains_any":
        return isinstance(v, str) and any(w in v for w in want)
    if op == "gt":
        return isinstance(v, int) and not isinstance(v, bool) and v > want
    if op == "lt":
        return isinstance(v, int) and not isinstance(v, bool) and v < want
    raise AssertionError(op)


def holds(cond: dict[str, Any], node: Any) -> bool:
    if "all" in cond:
        return all(holds(c, node) for c in cond["all"])
    if "any" in cond:
        return any(holds(c, node) for c in cond["any"])
    if "not" in cond:
        return not holds(cond["not"], node)
    if "some" in cond:
        return any(holds(cond["where"], x) for x in values(node, cond["some"]))
    vals = values(node, cond["field"])
    if cond["op"] == "exists":
        return bool(vals)
    if cond["op"] == "absent":
        return not vals
    return any(op_holds(cond["op"], v, cond["value"]) for v in vals)


@settings(max_examples=3000, deadline=None)
@given(CONDS, DOCS)
def test_compiled_conditions_agree_with_the_interpreter(cond: dict[str, Any], doc: Any) -> None:
    assert compile_condition(cond)(doc) == holds(cond, doc), (cond, doc)


@settings(max_examples=500, deadline=None)
@given(leaf(), SCALARS)
def test_every_op_on_every_kind_of_value(cond: dict[str, Any], value: Any) -> None:
    """Each op on a value of any JSON type answers True or False, never raises (a crafted event must not stop
    the engine): the field is always present here."""
    cond = {**cond, "field": "a"}
    assert compile_condition(cond)({"a": value}) == holds(cond, {"a": value})


@settings(max_examples=1500, deadline=None)
@given(st.lists(CONDS, min_size=1, max_size=4), st.lists(CONDS, max_size=2),
       st.dictionaries(st.sampled_from(KEYS), DOCS, max_size=3))  # fmt: skip
def test_a_group_of_conditions_agrees_with_the_interpreter(conds: list[Any], shared: list[Any], doc: Any) -> None:
    """compile_group (one function per rule-index entry) answers what each condition answers alone, in order;
    the conditions share conjuncts (as rules share macros) and, with three keys, paths too."""
    full = [{"all": [*shared, c]} for c in conds] + conds
    tags = [f"r{i}" for i in range(len(full))]
    want = [t for t, c in zip(tags, full, strict=True) if holds(c, doc)]
    assert compile_group(full, tags)(doc) == want, (full, doc)


def test_glob_shapes_on_every_string() -> None:
    """Globs are compiled by shape (exact, prefix, suffix, infix, other): each against fnmatch on each string."""
    for pat in GLOBS:
        for value in [*STRINGS, "yx", "xYy", "x.y", None, 1]:
            cond = {"field": "a", "op": "glob", "value": pat}
            assert compile_condition(cond)({"a": value}) == holds(cond, {"a": value}), (pat, value)


def test_tests_of_one_path_share_its_walk() -> None:
    """``all``/``any`` of several tests on one plain path (several icontains among them) walk it once."""
    leaves = [{"field": "a.b", "op": "icontains", "value": w} for w in ("X", "y", ".")]
    leaves += [{"field": "a.b", "op": "eq", "value": "xy"}, {"field": "a.b", "op": "exists"}]
    for join in ("all", "any"):
        for i in range(len(leaves)):
            for j in range(i + 1, len(leaves)):
                for k in range(len(leaves)):
                    cond = {join: [leaves[i], {"field": "c", "op": "falsy", "value": None}, leaves[j], leaves[k]]}
                    for value in [*STRINGS, "yx", "X.Y", None, 3]:
                        for doc in ({"a": {"b": value}}, {"a": {"b": value}, "c": 0}, {"a": value, "c": 1}):
                            assert compile_condition(cond)(doc) == holds(cond, doc), (cond, doc)


def test_list_ops_on_every_value_and_entry() -> None:
    """in_cidr, domain_in and contains_any (and in/not_in over a data-file list) on each value of the pools, with
    each single entry and with the whole pool, inline and as a data file's list, against the interpreter."""
    values = [*STRINGS, "10.255.0.1", "192.168.7.7", "::1", "::2", "EXAMPLE", "x.pool.example", "notexample",
              ".example", "a..b", " a.b ", "xy", None, 1, ["x"]]  # fmt: skip
    for op, pool, kind in (("in_cidr", CIDRS, "cidr"), ("domain_in", DOMAINS, "domain"),
                           ("contains_any", WORDS, "string"), ("in", STRINGS, "string"),
                           ("not_in", STRINGS, "string")):  # fmt: skip
        for entries in [[e] for e in pool] + [pool, []]:
            for want in (entries, DataList(entries, kind)):
                cond = {"field": "a", "op": op, "value": want}
                fn = compile_condition(cond)
                for value in values:
                    assert fn({"a": value}) == holds(cond, {"a": value}), (op, entries, value)
