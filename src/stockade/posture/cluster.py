"""Read a live cluster through a kubeconfig (any context: AKS, EKS, GKE, on-prem) with the official
kubernetes client: list calls only, paged with limit/continue."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import orjson
import yaml

from stockade.kube import to_resource
from stockade.model import Resource, StockadeError

# (group, version, plural, kind): what posture needs; secrets are never read
RESOURCES = [
    ("", "v1", "namespaces", "Namespace"),
    ("", "v1", "pods", "Pod"),
    ("", "v1", "serviceaccounts", "ServiceAccount"),
    ("", "v1", "replicationcontrollers", "ReplicationController"),
    ("apps", "v1", "deployments", "Deployment"),
    ("apps", "v1", "statefulsets", "StatefulSet"),
    ("apps", "v1", "daemonsets", "DaemonSet"),
    ("apps", "v1", "replicasets", "ReplicaSet"),
    ("batch", "v1", "jobs", "Job"),
    ("batch", "v1", "cronjobs", "CronJob"),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding"),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
    ("networking.k8s.io", "v1", "ingresses", "Ingress"),
    ("", "v1", "services", "Service"),
    ("", "v1", "resourcequotas", "ResourceQuota"),
    ("", "v1", "limitranges", "LimitRange"),
]
KIND_OF = {plural: kind for _g, _v, plural, kind in RESOURCES}


def unlisted_kinds(warnings: list[str]) -> frozenset[str]:
    """The kinds fetch could not list, from its warnings ("cannot list networkpolicies (HTTP 403)")."""
    out = set()
    for w in warnings:
        m = re.search(r"cannot list (\w+) \(HTTP", w)
        if m and m.group(1) in KIND_OF:
            out.add(KIND_OF[m.group(1)])
    return frozenset(out)


class ClusterError(StockadeError):
    pass


def fetch(
    kubeconfig: Path | None = None, context: str | None = None, page_size: int = 500, timeout: float = 15.0
) -> tuple[list[Resource], list[str], str | None]:
    """Every object posture needs, warnings for the types the credentials may not list, and the server's version
    (gitVersion from /version; None when it does not say)."""
    from kubernetes import config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError as Urllib3Error

    where = f"{kubeconfig or '~/.kube/config'}" + (f" (context {context})" if context else "")
    try:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            # inside a pod (the agent): the service account's token and CA
            from kubernetes import client as kclient

            cfg = kclient.Configuration()
            config.load_incluster_config(client_configuration=cfg)
            api = kclient.ApiClient(cfg)
            where = "the in-cluster service account"
        else:
            api = config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None, context=context)
    except (ConfigException, OSError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise ClusterError(f"{where}: unusable kubeconfig ({str(exc).splitlines()[0]})") from None
    api.configuration.retries = 1
    server = api.configuration.host
    out: list[Resource] = []
    warnings: list[str] = []
    server_version: str | None = None
    try:
        try:
            resp = api.call_api(
                "/version", "GET", auth_settings=["BearerToken"], _preload_content=False, _request_timeout=timeout
            )
            body = resp[0].data if isinstance(resp, tuple) else resp.data
            server_version = str(orjson.loads(body).get("gitVersion") or "") or None
        except ApiException as exc:
            if exc.status == 401:
                raise ClusterError(f"{server}: unauthorized (HTTP 401) with {where}; check the credentials") from None
            warnings.append(f"{server}: cannot read /version (HTTP {exc.status}); rules use the newest Kubernetes")
        except (orjson.JSONDecodeError, AttributeError):
            warnings.append(f"{server}: /version is not a version document; rules use the newest Kubernetes")
        for group, version, plural, kind in RESOURCES:
            path = f"/apis/{group}/{version}/{plural}" if group else f"/api/{version}/{plural}"
            token: str | None = None
            while True:
                query: list[tuple[str, Any]] = [("limit", page_size)] + ([("continue", token)] if token else [])
                try:
                    resp = api.call_api(
                        path,
                        "GET",
                        query_params=query,
                        auth_settings=["BearerToken"],
                        _preload_content=False,
                        _request_timeout=timeout,
                    )
                except ApiException as exc:
                    if exc.status == 401:
                        raise ClusterError(
                            f"{server}: unauthorized (HTTP 401) with {where}; check the credentials"
                        ) from None
                    if exc.status in (403, 404):
                        warnings.append(f"{server}: cannot list {plural} (HTTP {exc.status}); skipped")
                        break
                    raise ClusterError(f"{server}: listing {plural} failed (HTTP {exc.status})") from None
                body = resp[0].data if isinstance(resp, tuple) else resp.data
                try:
                    doc = orjson.loads(body)
                except orjson.JSONDecodeError:
                    raise ClusterError(f"{server}: {plural}: not a Kubernetes list response") from None
                api_version = f"{group}/{version}" if group else version
                for item in doc.get("items") or []:
                    item.setdefault("kind", kind)
                    item.setdefault("apiVersion", api_version)
                    out.append(to_resource(item, f"{server}{path}"))
                token = (doc.get("metadata") or {}).get("continue") or None
                if not token:
                    break
    except Urllib3Error as exc:
        raise ClusterError(f"{server}: unreachable ({type(exc).__name__}) with {where}") from None
    finally:
        api.close()
    return out, warnings, server_version
