"""`stockade admission`: the validating webhook, its certificates and its manifests."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from stockade.cli.common import err, input_errors, write
from stockade.model import StockadeError

APISERVER_DIR = "/etc/kubernetes/stockade"  # where the control plane keeps the webhook's client files
KUBECONFIG_AT = f"{APISERVER_DIR}/admission-kubeconfig.yaml"

admission_app = typer.Typer(help="Admission control: the validating webhook and its manifests.", no_args_is_help=True)


@admission_app.command("serve")
def admission_serve(
    cert: Annotated[Path, typer.Option(help="TLS certificate (PEM) the webhook serves")],
    key: Annotated[Path, typer.Option(help="Its private key (PEM)")],
    policy: Annotated[Path | None, typer.Option(help="Admission policy (YAML); default: audit every rule")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8443,
    client_ca: Annotated[
        Path | None,
        typer.Option(help="Require a client certificate signed by this CA (the API server's; mTLS)"),
    ] = None,
    probe_port: Annotated[
        int, typer.Option(help="With --client-ca: plain-HTTP port for /healthz, /readyz and /metrics")
    ] = 8081,
) -> None:
    """Serve the HTTPS validating webhook (AdmissionReview v1) with /healthz, /readyz and /metrics."""
    from stockade.admission.policy import AdmissionPolicy
    from stockade.admission.review import Reviewer
    from stockade.admission.server import create_app, serve

    with input_errors():
        pol = AdmissionPolicy.load(policy) if policy else AdmissionPolicy()
        for p in (cert, key, *([client_ca] if client_ca else [])):
            if not p.is_file():
                raise StockadeError(f"{p}: no such file")
        if client_ca is not None:
            _check_ca(client_ca)
        app = create_app(pol, Reviewer(pol))  # rules, exceptions and the log load here: errors are clear
    serve(app, host, port, str(cert), str(key), str(client_ca) if client_ca else None, probe_port)


def _check_ca(path: Path) -> None:
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_verify_locations(cafile=str(path))
    except (ssl.SSLError, ValueError) as exc:
        raise StockadeError(f"{path}: not a PEM CA certificate ({exc})") from None


@admission_app.command("certs")
def admission_certs(
    out: Annotated[Path, typer.Argument(help="Directory for ca.crt, tls.crt and tls.key")],
    namespace: Annotated[str, typer.Option(help="Namespace the webhook Service lives in")] = "stockade",
    service: Annotated[str, typer.Option(help="Name of the webhook Service")] = "stockade-admission",
    san: Annotated[list[str] | None, typer.Option(help="Extra DNS name or IP in the certificate")] = None,
    days: Annotated[int, typer.Option(help="Validity in days")] = 365,
) -> None:
    """Generate a CA and a serving certificate for the webhook's in-cluster Service name."""
    from stockade.admission.certs import apiserver_admission_config, apiserver_kubeconfig, generate

    with input_errors():
        try:
            generate(service, namespace, days, san).write(out)
            (out / "admission-config.yaml").write_text(apiserver_admission_config(KUBECONFIG_AT))
            (out / "admission-kubeconfig.yaml").write_text(
                apiserver_kubeconfig(service, namespace, f"{APISERVER_DIR}/apiserver-client.crt",
                                     f"{APISERVER_DIR}/apiserver-client.key")
            )
        except OSError as exc:
            raise StockadeError(f"{out}: cannot write the certificates ({exc.strerror})") from None
    err(f"wrote {out}/ca.crt, tls.crt, tls.key for {service}.{namespace}.svc; for mTLS (serve --client-ca ca.crt) "
        f"copy apiserver-client.crt/.key, admission-kubeconfig.yaml and admission-config.yaml to {APISERVER_DIR} "
        f"on the control plane and start kube-apiserver with --admission-control-config-file="
        f"{APISERVER_DIR}/admission-config.yaml")


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
    mtls: Annotated[
        bool, typer.Option(help="Accept only the API server's client certificate (see 'admission certs')")
    ] = False,
    api_server_cidr: Annotated[
        list[str] | None,
        typer.Option(help="Address range of the API server (repeat): a NetworkPolicy lets only it reach /validate"),
    ] = None,
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
        try:
            cidrs = [str(ipaddress.ip_network(c, strict=False)) for c in api_server_cidr or []]
        except ValueError as exc:
            raise StockadeError(f"--api-server-cidr: {exc}") from None
    docs = render(pol, policy_yaml, wc, namespace, image, timeout_seconds=timeout, mtls=mtls, api_server_cidrs=cidrs)
    write(yaml.safe_dump_all(docs, sort_keys=False).encode(), output)


