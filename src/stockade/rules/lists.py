"""Lists of a rule pack: written inline in the YAML, or backed by a data file (threat intelligence: IPs and CIDRs,
domains, hashes, strings), loaded once and indexed for its kind.

A file-backed list is declared as ``name: {file: PATH, kind: cidr|domain|hash|string, column: N}``: PATH is
relative to the rule file; one entry per line, ``#`` starts a comment, the entry is the line's field ``column``
(0 by default; fields are split on blanks and ``;``, so ``hosts`` files and LOKI's ``value;comment`` lines
read as they are). Entries that are not of the list's kind are counted and skipped (a feed with one bad line
still loads), and ``stockade rules check`` reports them.

Indexes, built once per list on first use, for the ops of the condition language:
  in_cidr       the value is an IP address inside one of the list's networks: per address family, one set of
                network numbers for each prefix length the list uses, so a lookup is one shift and one set
                probe per prefix length; dotted-quad IPv4 is parsed by inet_pton (C), the rest by ipaddress.
                bench/lists.py measures it against pytricia's radix tree (a C extension) on 128,489 real
                entries: 729 ns a lookup against pytricia's 1,278 ns, so no extension is needed
  domain_in     the value is one of the list's domains or below one (case-insensitive, a trailing dot ignored):
                a set of the domains, probed with each suffix of the value at a label boundary
  contains_any  the value holds one of the list's strings: ``in`` for a handful, one Aho-Corasick automaton
                (pyahocorasick) for more
  in, not_in    exact membership: one frozenset (hashes are lower-cased as they load)
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stockade.rules.errors import RuleError

KINDS = ("cidr", "domain", "hash", "string")
MAX_LIST_FILE = 256 * 1024**2  # a data file larger than this is refused (bounded memory)
_HEX = re.compile(r"[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64}|[0-9a-f]{128}")  # MD5, SHA-1, SHA-256, SHA-512
_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_FIELDS = re.compile(r"[\s;]+")
AHO_CORASICK_FROM = 8  # contains_any over this many strings or more runs one automaton


class DataList:
    """The entries of a list with the indexes its ops use; iterating gives the entries (for ``in``)."""

    def __init__(self, entries: list[str], kind: str = "string", source: str = "",
                 skipped: int = 0, first_skipped: str = "", name: str = "") -> None:  # fmt: skip
        self.kind, self.source, self.name = kind, source, name
        self.entries = tuple(dict.fromkeys(entries))  # first-seen order, once each
        self.skipped, self.first_skipped = skipped, first_skipped
        self._exact: frozenset[str] | None = None
        self._indexes: dict[str, Callable[[Any], bool]] = {}  # op -> its matcher, built on first use

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __contains__(self, value: object) -> bool:
        try:
            return value in self.exact()
        except TypeError:  # unhashable: in no list of strings
            return False

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"DataList({self.source or 'inline'}, {self.kind}, {len(self.entries)} entries)"

    @property
    def key(self) -> str:
        """Stands for the list where conditions are compared (rule groups share conjuncts by their JSON)."""
        return f"@list:{self.kind}:{self.source}:{id(self)}"

    def entry_for(self, value: Any) -> str | None:
        """The entry that ``value`` matches (the network holding an address, the domain above a name, the string
        itself), or None: what an alert names. A scan of the entries, for the few values that matched."""
        if not isinstance(value, str) or not value:
            return None
        if self.kind == "cidr":
            try:
                ip = ipaddress.ip_address(value.strip("[]"))
            except ValueError:
                return None
            for e in self.entries:
                try:
                    if ip in ipaddress.ip_network(e, strict=False):
                        return e
                except ValueError:
                    continue
            return None
        if self.kind == "domain":
            d = value.lower().rstrip(".")
            exact = self.exact()
            labels = d.split(".")
            return next((".".join(labels[i:]) for i in range(len(labels)) if ".".join(labels[i:]) in exact), None)
        if self.kind == "hash":
            return value.lower() if value.lower() in self.exact() else None
        return value if value in self.exact() else next((e for e in self.entries if e and e in value), None)

    def exact(self) -> frozenset[str]:
        if self._exact is None:
            self._exact = frozenset(self.entries)
        return self._exact

    def matcher(self, op: str) -> Callable[[Any], bool]:
        """The index for ``op`` (in_cidr, domain_in or contains_any), built once."""
        fn = self._indexes.get(op)
        if fn is None:
            build = {"in_cidr": cidr_matcher, "domain_in": domain_matcher, "contains_any": substring_matcher}[op]
            fn = self._indexes[op] = build(self.entries)
        return fn


def as_data_list(value: Any, kind: str = "string") -> DataList:
    """A DataList from a rule's value: itself, or an inline list of strings indexed on the spot."""
    if isinstance(value, DataList):
        return value
    if isinstance(value, str):
        value = [value]
    return DataList([str(v) for v in value], kind)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def cidr_matcher(entries: tuple[str, ...] | list[str]) -> Callable[[Any], bool]:
    """Whether a value (a string) is an IP address inside one of ``entries`` (addresses or networks); entries
    that are not either are ignored here (the loader has counted them)."""
    # family -> [(shift, set of network numbers)], longest prefixes first
    tables: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
    for e in entries:
        net = _network(e)
        if net is not None:
            bits = net.max_prefixlen - net.prefixlen
            tables[net.version].setdefault(bits, set()).add(int(net.network_address) >> bits)
    v4 = tuple(sorted(tables[4].items()))
    v6 = tuple(sorted(tables[6].items()))
    ip = ipaddress.ip_address
    pton, inet = socket.inet_pton, socket.AF_INET
    from_bytes = int.from_bytes

    def match(value: Any) -> bool:
        if not isinstance(value, str):
            return False
        try:  # dotted-quad IPv4, parsed in C: the common case (inet_pton refuses what ip_address refuses)
            n, table = from_bytes(pton(inet, value), "big"), v4
        except (OSError, ValueError):
            try:
                addr = ip(value)
            except ValueError:
                return False
            n, table = int(addr), v4 if addr.version == 4 else v6
        for shift, nets in table:  # noqa: SIM110 (a loop: any() over a generator costs more than the probes)
            if n >> shift in nets:
                return True
        return False

    if not v4 and not v6:  # an empty list (an indicator store not installed yet) matches nothing, at no cost
        return lambda _value: False
    # the answers for the addresses seen (an API server's clients are few and return all the time: kubelets,
    # controllers, CI); bounded, cleared when full
    seen: dict[str, bool] = {}

    def cached(value: Any) -> bool:
        if value.__class__ is not str:
            return False
        hit = seen.get(value)
        if hit is None:
            if len(seen) >= 65_536:
                seen.clear()
            hit = seen[value] = match(value)
        return hit

    return cached


def _domain(text: str) -> str:
    return text.strip().lower().rstrip(".")


def domain_matcher(entries: tuple[str, ...] | list[str]) -> Callable[[Any], bool]:
    """Whether a value is one of ``entries`` or a name below one (``a.pool.example`` is below ``example``)."""
    domains = frozenset(d for e in entries if (d := _domain(e)))

    def match(value: Any) -> bool:
        if not isinstance(value, str):
            return False
        name = _domain(value)
        if not name:
            return False
        if name in domains:
            return True
        i = name.find(".")
        while i >= 0:
            if name[i + 1 :] in domains:
                return True
            i = name.find(".", i + 1)
        return False

    return match


def substring_matcher(entries: tuple[str, ...] | list[str]) -> Callable[[Any], bool]:
    """Whether a value (a string) holds one of ``entries``."""
    words = tuple(dict.fromkeys(entries))
    if "" in words:  # the empty string is in every string
        return lambda value: isinstance(value, str)
    if len(words) < AHO_CORASICK_FROM:
        return lambda value: isinstance(value, str) and any(w in value for w in words)
    import ahocorasick

    automaton = ahocorasick.Automaton()
    for w in words:
        automaton.add_word(w, w)
    automaton.make_automaton()
    first = automaton.iter

    def match(value: Any) -> bool:
        if not isinstance(value, str):
            return False
        for _hit in first(value):
            return True
        return False

    return match


def valid_entry(kind: str, entry: str) -> str | None:
    """The entry as the list keeps it, or None when it is not of ``kind``."""
    if kind == "cidr":
        return entry if _network(entry) is not None else None
    if kind == "domain":
        d = _domain(entry)
        # an IP address is not a domain: a name's last label is never all digits (RFC 3696, 2)
        return d if _DOMAIN.fullmatch(d) and not d.rsplit(".", 1)[-1].isdigit() else None
    if kind == "hash":
        h = entry.lower()
        return h if _HEX.fullmatch(h) else None
    return entry


def load_file(path: Path, kind: str, column: int = 0, where: str = "") -> DataList:
    """The list in a data file (see the module's docstring); RuleError naming ``where`` when it cannot be read."""
    if kind not in KINDS:
        raise RuleError(f"{where}: list kind {kind!r} is not one of {', '.join(KINDS)}")
    try:
        size = path.stat().st_size
        if size > MAX_LIST_FILE:
            raise RuleError(f"{where}: {path} is {size // 1024**2} MiB, over the {MAX_LIST_FILE // 1024**2} MiB limit")
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise RuleError(f"{where}: cannot read list file {path} ({exc.strerror})") from None
    entries: list[str] = []
    skipped, first = 0, ""
    for n, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].strip() if kind != "string" else ("" if line.lstrip().startswith("#") else line)
        if not body.strip():
            continue
        fields = _FIELDS.split(body.strip()) if kind != "string" else [body.strip()]
        entry = valid_entry(kind, fields[column]) if column < len(fields) else None
        if entry is None:
            skipped += 1
            first = first or f"{path}:{n}: {line.strip()[:80]!r} is not a {kind}"
            continue
        entries.append(entry)
    return DataList(entries, kind, str(path), skipped, first)


_CACHE: dict[tuple[str, str, int, int, float], DataList] = {}  # loaded once per file, kind and column


def load_cached(path: Path, kind: str, column: int, where: str) -> DataList:
    """load_file, once per (file, kind, column) while the file is unchanged (rule packs load several times)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise RuleError(f"{where}: cannot read list file {path} ({exc.strerror})") from None
    key = (str(path.resolve()), kind, column, st.st_size, st.st_mtime)
    hit = _CACHE.get(key)
    if hit is None:
        hit = _CACHE[key] = load_file(path, kind, column, where)
        if len(_CACHE) > 64:
            _CACHE.pop(next(iter(_CACHE)))
    return hit


def flatten_lists(raw: Any, where: str, base: Path | None = None,
                  known: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """A pack file's ``lists``: inline lists (``$name`` items replaced by earlier lists' items) and file-backed
    lists (DataList); ``base`` is the directory file paths are relative to, ``known`` the lists of earlier
    files."""
    if not isinstance(raw, dict):
        raise RuleError(f"{where}: 'lists' must be a mapping of names to lists")
    out: dict[str, Any] = {}
    for name, items in raw.items():
        if isinstance(items, dict) and "file" in items:
            out[str(name)] = _file_list(str(name), items, where, base)
            continue
        if isinstance(items, dict) and "intel" in items:
            out[str(name)] = _intel_list(str(name), items, where)
            continue
        if not isinstance(items, list):
            raise RuleError(f"{where}: list {name!r} is not a list (or a mapping with 'file')")
        flat: list[Any] = []
        for it in items:
            if isinstance(it, str) and it.startswith("$"):
                ref = out.get(it[1:], (known or {}).get(it[1:]))
                if ref is None:
                    raise RuleError(f"{where}: list {name!r} refers to {it!r} before it is defined")
                flat += list(ref)
            else:
                flat.append(it)
        out[str(name)] = flat
    return out


def intel_dir() -> Path:
    """Where `stockade intel update` keeps the indicator lists: $STOCKADE_INTEL_DIR, else ~/.cache/stockade/intel."""
    env = os.environ.get("STOCKADE_INTEL_DIR")
    return Path(env) if env else Path.home() / ".cache" / "stockade" / "intel"


def intel_signature() -> tuple[tuple[str, float, int], ...]:
    """The indicator store's lists as (name, mtime, size): changes when `stockade intel update` rewrote one."""
    d = intel_dir()
    try:
        return tuple(sorted((p.name, p.stat().st_mtime, p.stat().st_size) for p in d.glob("*.txt")))
    except OSError:
        return ()


def _intel_list(name: str, spec: dict[str, Any], where: str) -> DataList:
    """A list from the indicator store (``{intel: tor-exits, kind: cidr}``, or several lists as one:
    ``{intel: [malicious-ips, c2-ips]}``): empty, and saying so, until `stockade intel update` has written it."""
    unknown = set(spec) - {"intel", "kind"}
    if unknown:
        raise RuleError(f"{where}: list {name!r}: unknown keys {', '.join(sorted(map(str, unknown)))}")
    idents = spec["intel"] if isinstance(spec["intel"], list) else [spec["intel"]]
    if not idents or not all(isinstance(i, str) and re.fullmatch(r"[a-z0-9-]+", i) for i in idents):
        raise RuleError(f"{where}: list {name!r}: 'intel' names lists of the indicator store, like tor-exits")
    kind = str(spec.get("kind", "string"))
    entries: list[str] = []
    sources = []
    for ident in idents:
        path = intel_dir() / f"{ident}.txt"
        if not path.is_file():
            sources.append(f"{path} (not installed: run 'stockade intel update')")
            continue
        lst = load_cached(path, kind, 0, f"{where}: list {name!r}")
        if len(idents) == 1:
            lst.name = lst.name or name
            return lst
        entries += lst.entries
        sources.append(str(path))
    return DataList(entries, kind, ", ".join(sources), name=name)


def _file_list(name: str, spec: dict[str, Any], where: str, base: Path | None) -> DataList:
    unknown = set(spec) - {"file", "kind", "column"}
    if unknown:
        raise RuleError(f"{where}: list {name!r}: unknown keys {', '.join(sorted(map(str, unknown)))}")
    kind = spec.get("kind", "string")
    column = spec.get("column", 0)
    if not isinstance(spec["file"], str) or not spec["file"]:
        raise RuleError(f"{where}: list {name!r}: 'file' must be a path")
    if not isinstance(column, int) or isinstance(column, bool) or column < 0:
        raise RuleError(f"{where}: list {name!r}: 'column' must be a number from 0")
    path = Path(spec["file"])
    if not path.is_absolute() and base is not None:
        path = base / path
    return load_cached(path, str(kind), column, f"{where}: list {name!r}")
