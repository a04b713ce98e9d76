"""Certificates for the webhook: a CA of its own and a serving certificate for the in-cluster Service name,
as the API server requires (it verifies the webhook against the caBundle in the configuration)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True, slots=True)
class WebhookCerts:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    client_cert_pem: bytes = b""  # the API server's client certificate, for mTLS (serve --client-ca ca.crt)
    client_key_pem: bytes = b""

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "ca.crt").write_bytes(self.ca_pem)
        (out / "tls.crt").write_bytes(self.cert_pem)
        _secret(out / "tls.key", self.key_pem)
        if self.client_cert_pem:
            (out / "apiserver-client.crt").write_bytes(self.client_cert_pem)
            _secret(out / "apiserver-client.key", self.client_key_pem)


def _secret(path: Path, data: bytes) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_bytes(data)


def apiserver_admission_config(kubeconfig: str) -> str:
    """The API server's --admission-control-config-file: present a client certificate to admission webhooks
    (the kubeconfig names it for the webhook's Service)."""
    return (
        "apiVersion: apiserver.config.k8s.io/v1\n"
        "kind: AdmissionConfiguration\n"
        "plugins:\n"
        "  - name: ValidatingAdmissionWebhook\n"
        "    configuration:\n"
        "      apiVersion: apiserver.config.k8s.io/v1\n"
        "      kind: WebhookAdmissionConfiguration\n"
        f"      kubeConfigFile: {kubeconfig}\n"
    )


def apiserver_kubeconfig(service: str, namespace: str, cert_path: str, key_path: str) -> str:
    """The kubeconfig the AdmissionConfiguration points at: which client certificate the API server shows to
    the webhook at ``service.namespace.svc`` (the user name is the Service's DNS name; ":port" only when the
    Service port is not 443, and ours is 443)."""
    return (
        "apiVersion: v1\n"
        "kind: Config\n"
        "users:\n"
        f"  - name: {service}.{namespace}.svc\n"
        "    user:\n"
        f"      client-certificate: {cert_path}\n"
        f"      client-key: {key_path}\n"
    )


def dns_names(service: str, namespace: str) -> list[str]:
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def generate(service: str, namespace: str, days: int = 365, extra_names: list[str] | None = None) -> WebhookCerts:
    """A P-256 CA and a serving certificate signed by it, valid ``days`` days."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"stockade admission CA ({namespace})")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for n in dns_names(service, namespace) + (extra_names or []):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            names.append(x509.DNSName(n))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{service}.{namespace}.svc")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver admission client")]))
        .issuer_name(ca_name)
        .public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return WebhookCerts(
        ca.public_bytes(serialization.Encoding.PEM),
        cert.public_bytes(serialization.Encoding.PEM),
        _pem_key(key),
        client.public_bytes(serialization.Encoding.PEM),
        _pem_key(client_key),
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip
