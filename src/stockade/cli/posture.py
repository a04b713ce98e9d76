"""`stockade posture` and `stockade node-check`: Kubernetes configuration against CIS, Pod Security Standards, NSA/CISA
and RBAC risk."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer

from stockade.cli.common import EXIT_USAGE, err, input_errors, write


class PostureFormat(StrEnum):
    table = "table"
    json = "json"
    sarif = "sarif"
    compliance_json = "compliance-json"
    compliance_html = "compliance-html"



def posture(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Manifests: YAML/JSON files or directories, kubectl get -o json lists")
    ] = None,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="Read a live cluster with this kubeconfig (read-only)")
    ] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context (default: the current one)")] = None,
    fmt: Annotated[PostureFormat, typer.Option("--format", "-f", help="Output format")] = PostureFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file")] = None,
    rules: Annotated[list[Path] | None, typer.Option(help="Extra rule file (YAML); repeatable")] = None,
    exceptions: Annotated[Path | None, typer.Option(help="Exceptions file (YAML)")] = None,
    severity: Annotated[str, typer.Option(help="Comma-separated severities to report")] = "CRITICAL,HIGH,MEDIUM,LOW",
    exit_code: Annotated[int, typer.Option(help="Exit with this code when findings remain")] = 0,
    k8s_version: Annotated[
        str | None,
        typer.Option(help="Kubernetes version whose Pod Security Standards apply (default: the cluster's, or latest)"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Assess Kubernetes objects against Pod Security Standards, CIS section 5, NSA/CISA and RBAC risk."""
    from stockade.posture import report as preport
    from stockade.posture.assess import assess

    wanted = {x.strip().upper() for x in severity.split(",") if x.strip()}
    if not paths and kubeconfig is None and context is None:
        err("[red]error:[/] give manifest paths, or --kubeconfig/--context for a live cluster")
        raise typer.Exit(EXIT_USAGE)
    with input_errors():
        done = assess(paths, kubeconfig, context, rules, exceptions, wanted, k8s_version)
    rule_set, resources, findings, excepted, active = done.rules, done.resources, done.findings, done.excepted, \
        done.active
    if not quiet:
        for w in done.warnings:
            err(f"[yellow]warning:[/] {w}")
    if fmt is PostureFormat.table and output is None:
        from rich.console import Console
        from rich.table import Table

        out = Console()
        out.print(
            f"{len(resources)} objects, {len(active)} findings" + (f", {len(excepted)} excepted" if excepted else "")
        )
        table = Table()
        for col in ("Severity", "Rule", "Object", "Container", "Title"):
            table.add_column(col, overflow="fold")
        for f in active:
            table.add_row(f.rule.severity, f.rule.id, f.resource.ref, f.container, f.rule.title)
        out.print(table)
    else:
        if fmt is PostureFormat.sarif:
            data = preport.to_sarif(active)
        elif fmt is PostureFormat.compliance_json:
            data = orjson.dumps(preport.compliance(rule_set, resources, active), option=orjson.OPT_INDENT_2)
        elif fmt is PostureFormat.compliance_html:
            data = preport.compliance_html(preport.compliance(rule_set, resources, active))
        else:
            data = preport.to_json(findings, excepted)
        write(data, output)
    if active and exit_code:
        raise typer.Exit(exit_code)



def node_check(
    root: Annotated[Path, typer.Option(help="The node's root filesystem")] = Path("/"),
    proc: Annotated[Path, typer.Option(help="The node's /proc (processes and their flags)")] = Path("/proc"),
    checks: Annotated[Path | None, typer.Option(help="Checks file (YAML) instead of the built-in CIS 1-4")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    exit_code: Annotated[int, typer.Option(help="Exit with this code when a check fails")] = 0,
) -> None:
    """CIS Kubernetes Benchmark sections 1-4 on this node: component flags, kubelet config, file permissions."""
    from stockade.posture.node.check import load_checks, run

    with input_errors():
        results = run(root, proc, load_checks(checks))
    if all(r.status == "SKIP" for r in results):
        err("[yellow]warning:[/] no Kubernetes component (kube-apiserver, kubelet, etcd...) runs on this node")
    if as_json:
        write(orjson.dumps([r.to_dict() for r in results], option=orjson.OPT_INDENT_2), None)
    else:
        for r in results:
            colour = {"PASS": "green", "FAIL": "red"}.get(r.status, "white")
            typer.secho(f"[{r.status}] {r.id} {r.title}: {r.detail}", fg=colour)
    if exit_code and any(r.status == "FAIL" for r in results):
        raise typer.Exit(exit_code)

