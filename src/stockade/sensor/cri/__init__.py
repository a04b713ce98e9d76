"""A client for the Kubernetes Container Runtime Interface (CRI, runtime.v1 over gRPC on the runtime's unix
socket: containerd, CRI-O, cri-dockerd): the sensor asks it which pod a container belongs to, as the kubelet
knows it (pod name, namespace and uid from the sandbox metadata; the image from the container)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from stockade.model import StockadeError
from stockade.sensor.cri import cri_pb2 as pb

# where the runtimes put their CRI socket, in the order the sensor tries them (crictl's defaults)
DEFAULT_SOCKETS = (
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
    "/var/run/cri-dockerd.sock",
    "/run/k3s/containerd/containerd.sock",
)
_SERVICE = "/runtime.v1.RuntimeService/"


class CriError(StockadeError):
    pass


def find_socket(root: Path = Path("/")) -> str | None:
    """The first runtime socket that exists (under ``root``: the host's / is mounted elsewhere in a pod)."""
    for s in DEFAULT_SOCKETS:
        p = root / s.lstrip("/")
        if p.is_socket():
            return str(p)
    return None


class CriClient:
    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self.path = socket_path.removeprefix("unix://")
        self.timeout = timeout
        self._channel = grpc.insecure_channel(f"unix://{os.path.abspath(self.path)}")
        self._calls: dict[str, Callable[..., Any]] = {}

    def _call(self, method: str, request: Any, response: type[Any]) -> Any:
        fn = self._calls.get(method)
        if fn is None:
            fn = self._calls[method] = self._channel.unary_unary(
                _SERVICE + method, request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response.FromString,
            )  # fmt: skip
        try:
            return fn(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            raise CriError(f"CRI {self.path}: {method} failed ({code.name if code else 'error'}: {detail})") from None

    def version(self) -> dict[str, str]:
        r = self._call("Version", pb.VersionRequest(version="v1"), pb.VersionResponse)
        return {"runtime": r.runtime_name, "version": r.runtime_version, "api": r.runtime_api_version}

    def containers(self) -> dict[str, dict[str, str]]:
        """Container id -> pod, namespace, pod_uid, name (the container's) and image, for every container the
        runtime knows; the sandbox's metadata is the source, with the kubelet's labels as a fallback."""
        sandboxes = {
            s.id: s for s in self._call("ListPodSandbox", pb.ListPodSandboxRequest(), pb.ListPodSandboxResponse).items
        }
        out: dict[str, dict[str, str]] = {}
        for c in self._call("ListContainers", pb.ListContainersRequest(), pb.ListContainersResponse).containers:
            sb = sandboxes.get(c.pod_sandbox_id)
            meta = sb.metadata if sb is not None else None
            labels = c.labels
            out[c.id] = {
                "pod": (meta.name if meta else "") or labels.get("io.kubernetes.pod.name", ""),
                "namespace": (meta.namespace if meta else "") or labels.get("io.kubernetes.pod.namespace", ""),
                "pod_uid": (meta.uid if meta else "") or labels.get("io.kubernetes.pod.uid", ""),
                "name": c.metadata.name or labels.get("io.kubernetes.container.name", ""),
                "image": c.image.image,
                "image_ref": c.image_ref,
            }
        return out

    # creating pods: what the kubelet does, used by the live tests to start a real pod
    def run_pod(self, name: str, namespace: str, uid: str, cgroup_parent: str) -> tuple[str, Any]:
        """A pod sandbox with the node's network, PID and IPC namespaces (no CNI needed): (id, its config)."""
        ns = pb.NamespaceOption(network=pb.NODE, pid=pb.NODE, ipc=pb.NODE)
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace=namespace, uid=uid),
            labels={"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace,
                    "io.kubernetes.pod.uid": uid},
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=cgroup_parent,
                                           security_context=pb.LinuxSandboxSecurityContext(namespace_options=ns)),
        )  # fmt: skip
        r = self._call("RunPodSandbox", pb.RunPodSandboxRequest(config=config), pb.RunPodSandboxResponse)
        return str(r.pod_sandbox_id), config

    def start_container(self, sandbox: str, sandbox_config: Any, name: str, image: str, command: list[str]) -> str:
        config = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=image),
                                    command=command)  # fmt: skip
        req = pb.CreateContainerRequest(pod_sandbox_id=sandbox, config=config, sandbox_config=sandbox_config)
        cid = str(self._call("CreateContainer", req, pb.CreateContainerResponse).container_id)
        self._call("StartContainer", pb.StartContainerRequest(container_id=cid), pb.StartContainerResponse)
        return cid

    def remove_pod(self, sandbox: str) -> None:
        self._call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sandbox), pb.StopPodSandboxResponse)
        self._call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox), pb.RemovePodSandboxResponse)

    def close(self) -> None:
        self._channel.close()


class PodLookup:
    """Container id -> pod, asked of the runtime when an unknown container id shows up: at most once per
    ``min_interval`` seconds, so a storm of host processes or short-lived containers does not flood it."""

    def __init__(self, client: CriClient, min_interval: float = 1.0) -> None:
        self.client, self.min_interval = client, min_interval
        self.known: dict[str, dict[str, str]] = {}
        self.errors = 0
        self.last_error = ""
        self._last = -1e9
        self._lock = threading.Lock()

    def get(self, container_id: str) -> dict[str, str] | None:
        hit = self.known.get(container_id)
        if hit is not None:
            return hit
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.min_interval:
                return None
            self._last = now
            try:
                self.known = self.client.containers()  # the current set: removed containers are forgotten
            except CriError as exc:
                self.errors += 1
                self.last_error = str(exc)
                return None
        return self.known.get(container_id)


def lookup_for(cri_socket: str, log: Callable[[str], None]) -> PodLookup | None:
    """The pod lookup for ``--cri-socket``: None for 'none' or when 'auto' finds no runtime (said through
    ``log``); StockadeError when a socket named explicitly does not answer."""
    if cri_socket == "none":
        return None
    path = cri_socket
    if cri_socket == "auto":
        found = find_socket() or find_socket(Path("/host"))
        if found is None:
            log("pod lookup: no container runtime socket found (--cri-socket); pods are named from cgroups only")
            return None
        path = found
    client = CriClient(path)
    try:
        v = client.version()
    except CriError as exc:
        client.close()
        if cri_socket == "auto":
            log(f"pod lookup: {exc}; pods are named from cgroups only")
            return None
        raise StockadeError(str(exc)) from None
    log(f"pod lookup: {v['runtime']} {v['version']} (CRI {v['api']}) at {path}")
    return PodLookup(client)
