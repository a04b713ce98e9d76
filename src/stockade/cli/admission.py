"""`stockade admission`: the validating webhook, its certificates and its manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stockade.cli.common import err, input_errors, write
from stockade.model import StockadeError

admission_app = typer.Typer(help="Admission control: the validating webhook and its manifests.", no_args_is_help=True)


@admission_app.command("serve")
def admission_serve(
    cert: Annotated[Path, typer.Option(help="TLS certificate (PEM) the webhook serves")],
    key: Annotated[Path, typer.Option(help="Its private key (PEM)")],
    policy: Annotated[Path | None, typer.Option(help="Admission policy (YAML); default: audit every rule")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8443,
) -> None:
    """Serve the HTTPS validating webhook (AdmissionReview v1) with /healthz, /readyz and /metrics."""
    from stockade.admission.policy import AdmissionPolicy
    from stockade.admission.review import Reviewer
    from stockade.admission.server import create_app, serve

    with input_errors():
        pol = AdmissionPolicy.load(policy) if policy else AdmissionPolicy()
        for p in (cert, key):
            if not p.is_file():
                raise StockadeError(f"{p}: no such file")
        app = create_app(pol, Reviewer(pol))  # rules, exceptions and the log load here: errors are clear
    serve(app, host, port, str(cert), str(key))


@admission_app.command("certs")
def admission_certs(
    out: Annotated[Path, typer.Argument(help="Directory for ca.crt, tls.crt and tls.key")],
    namespace: Annotated[str, typer.Option(help="Namespace the webhook Service lives in")] = "stockade",
    service: Annotated[str, typer.Option(help="Name of the webhook Service")] = "stockade-admission",
    san: Annotated[list[str] | None, typer.Option(help="Extra DNS name or IP in the certificate")] = None,
    days: Annotated[int, typer.Option(help="Validity in days")] = 365,
) -> None:
    """Generate a CA and a serving certificate for the webhook's in-cluster Service name."""
    from stockade.admission.certs import generate

    with input_errors():
        try:
            generate(service, namespace, days, san).write(out)
        except OSError as exc:
            raise StockadeError(f"{out}: cannot write the certificates ({exc.strerror})") from None
    err(f"wrote {out}/ca.crt, tls.crt, tls.key for {service}.{namespace}.svc")


@admission_app.command("manifests")
def admission_manifests(
    policy: Annotated[Path | None, typer.Option(help="Admission policy (YAML) to install")] = None,
    certs: Annotated[
        Path | None, typer.Option(help="Directory from 'stockade admission certs' (default: generate new ones)")
    ] = None,
    namespace: Annotated[str, typer.Option(help="Namespace to install into")] = "stockade",
    image: Annotated[str, typer.Option(help="stockade container image")] = "ghcr.io/stockade/stockade:latest",
    timeout: Annotated[int, typer.Option(help="Webhook timeoutSeconds (1-30)")] = 5,
    vap: Annotated[
        bool, typer.Option(help="Instead: ValidatingAdmissionPolicies for the rules CEL can express (no webhook)")
    ] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file")] = None,
) -> None:
    """Print the ValidatingWebhookConfiguration, Deployment, Service, PodDisruptionBudget and the rest (YAML)."""
    import yaml

    from stockade.admission.certs import WebhookCerts, generate
    from stockade.admission.manifests import render
    from stockade.admission.policy import AdmissionPolicy

    with input_errors():
        pol = AdmissionPolicy.load(policy) if policy else AdmissionPolicy()
        if vap:
            from stockade.admission.cel import export_policies
            from stockade.posture import load_rules

            docs, skipped = export_policies(load_rules(pol.extra_rules), pol)
            header = "# Rules CEL cannot express (use the webhook for these):\n" + "".join(
                f"#   {rid}: {why}\n" for rid, why in skipped
            )
            write((header + yaml.safe_dump_all(docs, sort_keys=False)).encode(), output)
            return
        if not 1 <= timeout <= 30:
            raise StockadeError("--timeout must be between 1 and 30 seconds (the API server's limits)")
        if certs is not None:
            try:
                wc = WebhookCerts(*((certs / n).read_bytes() for n in ("ca.crt", "tls.crt", "tls.key")))
            except OSError as exc:
                raise StockadeError(f"{certs}: cannot read ca.crt, tls.crt and tls.key ({exc.strerror})") from None
        else:
            wc = generate("stockade-admission", namespace)
        policy_yaml = policy.read_text() if policy else "defaultMode: audit\n"
    docs = render(pol, policy_yaml, wc, namespace, image, timeout_seconds=timeout)
    write(yaml.safe_dump_all(docs, sort_keys=False).encode(), output)


