"""Rule files: YAML read once, errors that name the file and the line, the fields every detection rule has (id,
title, severity, MITRE tags, condition with macros and lists expanded, exceptions, remediation, output), and
packs (built-in files, then the user's, later ones seeing earlier ones' lists and macros)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import yaml

from stockade.rules.alerts import reads_of
from stockade.rules.conditions import check_condition, compile_condition
from stockade.rules.errors import RuleError
from stockade.rules.lists import DataList, flatten_lists
from stockade.rules.tags import mitre

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO")


@dataclass(slots=True)
class Source:
    """One rule file: ``name`` as errors show it, its text, and the directory its list files are relative to."""

    name: str
    text: str = ""
    base: Path | None = None

    def load(self) -> Any:
        try:
            return yaml.load(self.text, Loader=_LOADER)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            at = f"{self.name}:{mark.line + 1}" if mark is not None else self.name
            raise RuleError(f"{at}: malformed YAML ({str(exc).splitlines()[0]})") from None

    def line(self, *path: str | int) -> int | None:
        """The line (from 1) where the node at ``path`` (mapping keys and list indexes) starts; None when the text
        is not at hand or holds no such node. Composed only when an error needs it."""
        if not self.text:
            return None
        try:
            node = yaml.compose(self.text, Loader=_LOADER)
        except yaml.YAMLError:
            return None
        if node is None:
            return None
        for step in path:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == str(step)), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
                node = node.value[step]
            else:
                return None
            if node is None:
                return None
        return int(node.start_mark.line) + 1

    @contextlib.contextmanager
    def at(self, *path: str | int) -> Iterator[None]:
        """Errors raised inside name the line of the node at ``path`` after the file's name."""
        try:
            yield
        except RuleError as exc:
            msg = str(exc)
            line = self.line(*path) if msg.startswith(self.name + ":") else None
            if line is None:
                raise
            raise RuleError(f"{self.name}:{line}:{msg[len(self.name) + 1 :]}") from None


def as_source(where: Source | str) -> Source:
    return where if isinstance(where, Source) else Source(str(where))


def read_sources(package: str, extra: list[Path] | None) -> list[Source]:
    """The ``rules/*.yaml`` files of ``package`` in name order, then the extra files."""
    pkg = importlib_resources.files(package) / "rules"
    base = Path(str(pkg)) if Path(str(pkg)).is_dir() else None
    sources = [Source(f"rules/{p.name}", p.read_text(), base)
               for p in sorted(pkg.iterdir(), key=lambda x: x.name) if p.name.endswith(".yaml")]  # fmt: skip
    for p in extra or []:
        try:
            sources.append(Source(str(p), p.read_text(), p.parent))
        except OSError as exc:
            raise RuleError(f"{p}: cannot read ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise RuleError(f"{p}: not a text file") from None
    return sources


def expand(node: Any, lists: dict[str, Any], macros: dict[str, Any], where: str, seen: tuple[str, ...] = ()) -> Any:
    """Macros replaced by their conditions and "$list" values by the lists, recursively."""
    if isinstance(node, dict):
        if "macro" in node:
            name = node["macro"]
            if name not in macros:
                raise RuleError(f"{where}: unknown macro {name!r}")
            if name in seen:
                raise RuleError(f"{where}: macro {name!r} refers to itself")
            return expand(macros[name], lists, macros, where, (*seen, name))
        return {k: expand(v, lists, macros, where, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [expand(v, lists, macros, where, seen) for v in node]
    if isinstance(node, str) and node.startswith("$"):
        if node[1:] not in lists:
            raise RuleError(f"{where}: unknown list {node!r}")
        return lists[node[1:]]
    return node


def read_definitions(doc: Any, src: Source, lists: dict[str, Any], macros: dict[str, Any]) -> None:
    """A pack file's lists and macros, added to those of the files before it."""
    if not isinstance(doc, dict):
        raise RuleError(f"{src.name}: expected a mapping with lists, macros and rules")
    raw = doc.get("lists") or {}
    if not isinstance(raw, dict):
        raise RuleError(f"{src.name}: 'lists' must be a mapping of names to lists")
    for name in raw:
        with src.at("lists", str(name)):
            lists.update(flatten_lists({name: raw[name]}, src.name, src.base, lists))
    m = doc.get("macros") or {}
    if not isinstance(m, dict):
        raise RuleError(f"{src.name}: 'macros' must be a mapping of names to conditions")
    macros.update(m)


def each_rule(doc: dict[str, Any], src: Source) -> Iterator[tuple[int, str, Any]]:
    """(index, where, rule) for each rule of a file; the caller handles each inside ``src.at("rules", index)``
    so that its errors name the rule's line."""
    rules = doc.get("rules") or []
    if not isinstance(rules, list):
        raise RuleError(f"{src.name}: 'rules' must be a list")
    for i, r in enumerate(rules):
        yield i, f"{src.name}: rule {i}" + (f" ({r.get('id')})" if isinstance(r, dict) and r.get("id") else ""), r


def read_rule(
    r: Any,
    where: str,
    lists: dict[str, Any],
    macros: dict[str, Any],
    default: dict[str, Any],
    required: tuple[str, ...] = (),
) -> dict[str, Any] | None:
    """What audit and sensor rules share, checked and compiled: id, title, severity, MITRE tactics and
    techniques, condition (``default`` when absent), exceptions, description, remediation, output. None for
    a rule with ``enabled: false``; ``required`` names further keys the rule must have."""
    w = where  # names the rule (file, index and id: each_rule) in every error
    if not isinstance(r, dict):
        raise RuleError(f"{w}: not a mapping")
    if r.get("enabled") is False:
        return None
    missing = [k for k in ("id", "title", "severity", "remediation", *required) if not r.get(k)]
    if missing:
        raise RuleError(f"{w}: missing {', '.join(missing)}")
    if r["severity"] not in SEVERITIES:
        raise RuleError(f"{w}: severity must be one of {', '.join(SEVERITIES)}")
    tactics, techniques = mitre(r, w)
    cond = expand(r.get("condition") or default, lists, macros, w)
    excs = [expand(e, lists, macros, w) for e in r.get("exceptions") or []]
    check_condition(cond, f"{w}: condition")
    for j, e in enumerate(excs):
        check_condition(e, f"{w}: exceptions[{j}]")
    tree = {"all": [cond, {"not": {"any": excs}}]} if excs else cond
    return {
        "id": str(r["id"]),
        "title": str(r["title"]),
        "severity": str(r["severity"]),
        "tactics": tactics,
        "techniques": techniques,
        # one compiled function: the condition holds and no exception does
        "condition": compile_condition(tree),
        "description": str(r.get("description", "")),
        "remediation": str(r["remediation"]),
        "output": str(r.get("output", "")),
        "tree": tree,
        "reads": reads_of(tree, str(r.get("output", ""))),
    }


ParseFile = Callable[[Any, Source, dict[str, Any], dict[str, Any]], list[Any]]


def load_pack(package: str, extra: list[Path] | None, parse_file: ParseFile) -> list[Any]:
    """The rule files of ``package``'s rules/ directory, then the extra files, through ``parse_file(doc, source,
    lists, macros)``; later files see earlier files' lists and macros, and a rule replaces an earlier one with
    the same id."""
    lists: dict[str, Any] = {}
    macros: dict[str, Any] = {}
    by_id: dict[str, Any] = {}
    for src in read_sources(package, extra):
        for r in parse_file(src.load(), src, lists, macros):
            by_id[r.id] = r
    return list(by_id.values())


def data_lists(lists: dict[str, Any]) -> list[tuple[str, DataList]]:
    """The file-backed lists among a pack's lists (for reporting what their files held)."""
    return [(n, v) for n, v in lists.items() if isinstance(v, DataList)]


@dataclass(slots=True)
class CheckReport:
    """What ``stockade rules check`` found in one file."""

    path: str
    engine: str = ""
    rules: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def pack_definitions(package: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The lists and macros of ``package``'s built-in rule files (what a user's file may use)."""
    lists: dict[str, Any] = {}
    macros: dict[str, Any] = {}
    for src in read_sources(package, None):
        read_definitions(src.load(), src, lists, macros)
    return lists, macros


ReadOne = Callable[[Any, str, dict[str, Any], dict[str, Any]], Any]


def check_pack_file(src: Source, package: str, read_one: ReadOne, report: CheckReport) -> None:
    """Every error of a user's rule file for ``package``'s pack (each rule on its own, so that one bad rule does
    not hide the next), and the entries its data-file lists skipped, into ``report``."""
    lists, macros = pack_definitions(package)
    try:
        doc = src.load()
        known = dict(lists)
        read_definitions(doc, src, known, macros)
        own_lists = {k: v for k, v in known.items() if k not in lists or lists[k] is not v}
    except RuleError as exc:
        report.errors.append(str(exc))
        return
    for name, data in data_lists(own_lists):
        if data.skipped:
            report.warnings.append(f"{src.name}: list {name!r}: {data.skipped} entries skipped "
                                   f"(first: {data.first_skipped})")  # fmt: skip
    check_rules(doc, src, lambda r, w: read_one(r, w, known, macros), report)


def check_rules(doc: dict[str, Any], src: Source, read: Callable[[Any, str], Any], report: CheckReport) -> None:
    """Each rule of a file through ``read(rule, where)`` on its own, every error (at its line) into ``report``,
    and an id used twice in the file as one more error."""
    try:
        rules = list(each_rule(doc, src))
    except RuleError as exc:
        report.errors.append(str(exc))
        return
    seen: set[str] = set()
    for i, w, r in rules:
        try:
            with src.at("rules", i):
                rule = read(r, w)
                if rule is not None and rule.id in seen:
                    raise RuleError(f"{w}: rule id {rule.id!r} used twice in this file")
        except RuleError as exc:
            report.errors.append(str(exc))
            continue
        if rule is not None:
            seen.add(rule.id)
            report.rules += 1
