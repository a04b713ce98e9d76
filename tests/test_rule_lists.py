"""Lists backed by data files (rules/lists.py) on the real threat-intelligence lists in ../shared/data/intel, a
rule pack that uses one (fires on a listed address, silent on its neighbour), and rule-file errors that name
the file and the line. Oracles: Python's ipaddress module, plain set and suffix logic written here, and the
line numbers found by searching the rule file's text."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from stockade.audit.detect import Detector
from stockade.audit.events import Stats, documents_to_events
from stockade.audit.rules import load as load_audit_rules
from stockade.rules import RuleError, compile_condition, load_file
from stockade.rules.lists import MAX_LIST_FILE, load_cached

INTEL = Path(__file__).resolve().parents[2] / "shared" / "data" / "intel"
CLI = [sys.executable, "-m", "stockade.cli.main"]


@pytest.fixture(scope="module")
def intel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("intel")
    for archive in sorted(INTEL.glob("*.tar.gz")):
        with tarfile.open(archive) as tf:
            tf.extractall(out, filter="data")
    return out


def _lines(path: Path) -> list[str]:
    """The data lines of a list file: comments and blank lines out."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        body = line.split("#", 1)[0].strip()
        if body:
            out.append(body)
    return out


def _is_ip_or_net(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def test_tor_and_ipsum_lists_as_cidr(intel: Path) -> None:
    tor = intel / "SecOps-Institute+Tor-IP-Addresses" / "tor-exit-nodes.lst"
    ipsum = intel / "stamparm+ipsum" / "ipsum.txt"
    tor_ips = {str(ipaddress.ip_address(x)) for x in _lines(tor) if _is_ip_or_net(x)}
    assert len(tor_ips) > 500
    lst = load_file(tor, "cidr")
    assert set(lst) == set(_lines(tor)) and lst.skipped == sum(not _is_ip_or_net(x) for x in _lines(tor))
    match = lst.matcher("in_cidr")
    ipsum_ips = [x.split()[0] for x in _lines(ipsum)]
    assert len(ipsum_ips) > 100_000
    for ip in ipsum_ips[:20_000] + sorted(tor_ips):  # the oracle: set membership (the tor list holds addresses)
        assert match(ip) == (ip in tor_ips), ip
    # ipsum's "address<TAB>count" lines: the address is the first field
    ipsum_list = load_file(ipsum, "cidr")
    assert len(ipsum_list) == len(set(ipsum_ips)) and ipsum_list.skipped == 0
    assert ipsum_list.matcher("in_cidr")(ipsum_ips[-1]) and not ipsum_list.matcher("in_cidr")("127.0.0.1")


def test_loki_iocs_mixed_list_and_hashes(intel: Path) -> None:
    """LOKI's c2-iocs.txt mixes addresses and domains ("value;comment" too): as a cidr list the domains are
    counted and skipped, as a domain list the addresses are; hash-iocs.txt as hashes."""
    iocs = intel / "Neo23x0+signature-base" / "iocs"
    c2 = [re.split(r"[\s;]+", x)[0] for x in _lines(iocs / "c2-iocs.txt")]
    ips = [x for x in c2 if _is_ip_or_net(x)]
    as_cidr = load_file(iocs / "c2-iocs.txt", "cidr")
    assert len(as_cidr) == len(set(ips)) and as_cidr.skipped == len(c2) - len(ips) > 0
    assert as_cidr.first_skipped.startswith(f"{iocs / 'c2-iocs.txt'}:")
    as_domain = load_file(iocs / "c2-iocs.txt", "domain")
    names = {x.lower().rstrip(".") for x in c2 if not _is_ip_or_net(x)}
    assert set(as_domain) <= names and len(as_domain) > 100
    match = as_domain.matcher("domain_in")
    some = sorted(as_domain)[:200]
    for d in some:
        assert match(d) and match("www." + d.upper() + ".")  # below a listed domain, any case, trailing dot
        neighbour = d + "-cdn.org"
        assert match(neighbour) == any(neighbour == x or neighbour.endswith("." + x) for x in names)
    hashes = [re.split(r"[\s;]+", x)[0].lower() for x in _lines(iocs / "hash-iocs.txt")]
    good = [h for h in hashes if re.fullmatch(r"[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64}", h)]
    hl = load_file(iocs / "hash-iocs.txt", "hash")
    assert set(hl) == set(good) and hl.skipped == len(hashes) - len(good)
    cond = {"field": "sha256", "op": "in", "value": hl}
    assert compile_condition(cond)({"sha256": good[0]}) and not compile_condition(cond)({"sha256": "0" * 64})


def test_hosts_file_by_column(intel: Path) -> None:
    """The nocoin ``hosts`` file ("0.0.0.0 domain" lines): column 1 is the domain."""
    hosts = intel / "hoshsadiq+adblock-nocoin-list" / "hosts.txt"
    domains = {x.split()[1].lower() for x in _lines(hosts) if len(x.split()) > 1}
    lst = load_file(hosts, "domain", column=1)
    assert set(lst) == domains and len(domains) > 100
    match = lst.matcher("domain_in")
    for d in sorted(domains)[:300]:
        assert match("ws." + d)
        assert not match(d.replace(".", "-") + ".example") or any(
            (d.replace(".", "-") + ".example").endswith("." + x) for x in domains
        )
    assert load_file(hosts, "cidr").skipped == 0  # column 0 is 0.0.0.0 on every line


def _exec_event(traces: Path) -> dict[str, Any]:
    raw = [json.loads(line) for line in (traces / "exec_pod.json").read_text().splitlines() if line.strip()]
    return raw[0]


def test_a_rule_pack_with_a_data_file_list(intel: Path, traces: Path, tmp_path: Path) -> None:
    """A user rule file names the Tor list (relative to itself): the rule fires for a request from a listed
    address and stays silent for the next address, which is not listed."""
    tor = intel / "SecOps-Institute+Tor-IP-Addresses" / "tor-exit-nodes.lst"
    listed = {str(ipaddress.ip_address(x)) for x in _lines(tor) if _is_ip_or_net(x)}
    inside = sorted(listed)[0]
    outside = next(str(ipaddress.ip_address(inside) + i) for i in range(1, 1000)
                   if str(ipaddress.ip_address(inside) + i) not in listed)  # fmt: skip
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "tor.lst").write_bytes(tor.read_bytes())
    rules = tmp_path / "tor.yaml"
    rules.write_text(
        "lists:\n"
        "  tor_exits: {file: lists/tor.lst, kind: cidr}\n"
        "rules:\n"
        "  - id: ACME-TOR\n"
        "    title: Request to the API server from a Tor exit node\n"
        "    severity: HIGH\n"
        "    mitre: {tactics: [Initial Access], techniques: [T1133]}\n"
        "    remediation: Restrict the API server's authorized networks.\n"
        "    condition: {field: 'sourceIPs[*]', op: in_cidr, value: $tor_exits}\n"
    )
    pack = load_audit_rules([rules])
    fired = []
    for ip in (inside, outside):
        ev = copy.deepcopy(_exec_event(traces))
        ev["sourceIPs"] = [ip]
        d = Detector(pack)
        for e in documents_to_events(ev, Stats()):
            d.process(e)
        fired.append("ACME-TOR" in {a.rule for a in d.alerts})
    assert fired == [True, False]
    # loaded once: a second load of the pack shares the indexed list
    again = load_audit_rules([rules])
    first_list = next(r for r in pack if r.id == "ACME-TOR").tree["value"]
    assert next(r for r in again if r.id == "ACME-TOR").tree["value"] is first_list


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_errors_name_file_and_line(tmp_path: Path) -> None:
    text = (
        "lists:\n"
        "  ok: [a, b]\n"
        "  missing: {file: nowhere.txt, kind: cidr}\n"
        "rules: []\n"
    )
    bad_list = tmp_path / "bad_list.yaml"
    bad_list.write_text(text)
    with pytest.raises(RuleError) as exc:
        load_audit_rules([bad_list])
    assert str(exc.value).startswith(f"{bad_list}:{_line_of(text, 'missing:')}: list 'missing': cannot read")
    rule = (
        "rules:\n"
        "  - id: GOOD\n    title: t\n    severity: LOW\n    remediation: r\n    mitre: {techniques: [T1]}\n"
        "  - id: BAD-CIDR\n    title: t\n    severity: LOW\n    remediation: r\n    mitre: {techniques: [T1]}\n"
        "    condition: {field: 'sourceIPs[*]', op: in_cidr, value: [10.0.0.0/8, not-a-network]}\n"
    )
    bad_rule = tmp_path / "bad_rule.yaml"
    bad_rule.write_text(rule)
    with pytest.raises(RuleError) as exc:
        load_audit_rules([bad_rule])
    assert str(exc.value).startswith(f"{bad_rule}:{_line_of(rule, 'BAD-CIDR')}: rule 1 (BAD-CIDR)")
    assert "'not-a-network' is not a cidr" in str(exc.value)
    yaml_err = tmp_path / "broken.yaml"
    yaml_err.write_text("rules:\n  - id: X\n    title: [unclosed\n")
    with pytest.raises(RuleError, match=rf"^{re.escape(str(yaml_err))}:\d+: malformed YAML"):
        load_audit_rules([yaml_err])


def test_huge_list_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.lst"
    with big.open("wb") as fh:
        fh.truncate(MAX_LIST_FILE + 1)  # sparse: no disk used
    with pytest.raises(RuleError, match="over the"):
        load_cached(big, "cidr", 0, "test")


def test_rules_check_and_list(tmp_path: Path) -> None:
    """`stockade rules check` prints each error with file:line and exits 1; a good file passes with exit 0;
    `stockade rules list` names every built-in rule of every engine."""
    good = tmp_path / "good.yaml"
    good.write_text("rules:\n  - id: G\n    title: t\n    severity: LOW\n    remediation: r\n"
                    "    mitre: {techniques: [T1]}\n    condition: {field: verb, op: eq, value: get}\n")  # fmt: skip
    bad = tmp_path / "bad.yaml"
    text = "rules:\n  - id: B\n    title: t\n    severity: NOPE\n    remediation: r\n    mitre: {techniques: [T1]}\n"
    bad.write_text(text)
    ok = subprocess.run([*CLI, "rules", "check", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    out = subprocess.run([*CLI, "rules", "check", str(good), str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert f"{bad}:{_line_of(text, 'id: B')}: rule 0 (B): severity must be one of" in out.stdout + out.stderr
    listing = subprocess.run([*CLI, "rules", "list", "--json"], capture_output=True, text=True, check=True)
    rows = json.loads(listing.stdout)
    by_engine = {r["engine"] for r in rows}
    assert by_engine == {"posture", "audit", "sensor"}
    # the oracle: ids written in the packs' YAML, and the rules written in code (cross-object posture checks,
    # the sensor's behavioural baseline), found by their text
    pkg = Path(__file__).resolve().parents[1] / "src" / "stockade"
    want: set[str] = set()
    for f in [*pkg.glob("*/rules/*.yaml"), *pkg.glob("*/packs/*.yaml")]:
        want |= set(re.findall(r"(?m)^\s*- id: ['\"]?([\w-]+)", f.read_text()))
    for f in (pkg / "posture" / "graph.py", pkg / "sensor" / "detect.py", pkg / "audit" / "detect.py"):
        want |= set(re.findall(r"\"(STK-[A-Z]+-\d+)\"", f.read_text()))
    assert {r["id"] for r in rows} == want
    assert all(r["severity"] and r["title"] for r in rows)
    assert all(r["mitre"] for r in rows if r["engine"] != "posture")
