"""Pod Security Standards verdicts as Kubernetes' own pod-security-admission gives them, at each policy version.

Every case is written from upstream's check code (kubernetes/pod-security-admission, policy/check_*.go), not
from stockade's rules: the check it exercises and the reason for the verdict are in its comment. A case that
upstream denies has a benign neighbour that looks alike and is allowed."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stockade.kube import to_resource
from stockade.posture import evaluate, load_rules, parse_version

RULES = [r for r in load_rules() if r.id.startswith("STK-PSS-")]


def pod(spec: dict[str, Any] | None = None, annotations: dict[str, str] | None = None,
        container: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """A pod that meets the restricted profile at every version, with ``spec`` merged into its spec and
    ``container`` into its one container."""
    ctr: dict[str, Any] = {
        "name": "app",
        "image": "registry.example/app:1",
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    for k, v in (container or {}).items():
        ctr[k] = {**ctr.get(k, {}), **v} if isinstance(v, dict) and isinstance(ctr.get(k), dict) else v
    base: dict[str, Any] = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [ctr],
    }
    for k, v in (spec or {}).items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    meta: dict[str, Any] = {"name": "p", "namespace": "apps"}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": base}


def verdict(obj: dict[str, Any], level: str, version: str) -> bool:
    """Whether stockade allows ``obj`` at the Pod Security ``level`` of policy ``version``."""
    levels = {"baseline"} if level == "baseline" else {"baseline", "restricted"}
    found = evaluate(RULES, [to_resource(copy.deepcopy(obj))], cross=False, version=parse_version(version))
    return not [f for f in found if f.rule.frameworks.get("pss", {}).get("level") in levels]


CASES = [
    # -- pod-level fields are judged on their own ------------------------------------------------------------
    # check seLinuxOptions: the pod's options and each container's are validated separately; a container's own
    # (even empty) options do not replace a forbidden pod-level type
    ("pod SELinux type spc_t, container sets {}", pod({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}},
     container={"securityContext": {"seLinuxOptions": {}}}), "baseline", "1.30", False),
    ("pod SELinux type container_t, container sets {}", pod({"securityContext": {"seLinuxOptions": {"type":
     "container_t"}}}, container={"securityContext": {"seLinuxOptions": {}}}), "baseline", "1.30", True),
    ("pod SELinux user set, container sets a valid type", pod({"securityContext": {"seLinuxOptions": {"user":
     "system_u"}}}, container={"securityContext": {"seLinuxOptions": {"type": "container_t"}}}), "baseline",
     "1.30", False),
    ("container SELinux container_engine_t before 1.31", pod(container={"securityContext": {"seLinuxOptions":
     {"type": "container_engine_t"}}}), "baseline", "1.30", False),
    ("container SELinux container_engine_t from 1.31", pod(container={"securityContext": {"seLinuxOptions":
     {"type": "container_engine_t"}}}), "baseline", "1.31", True),
    # check seccompProfile_baseline (1.19+): pod Unconfined is forbidden whatever the containers set
    ("pod seccomp Unconfined, container RuntimeDefault", pod({"securityContext": {"seccompProfile": {"type":
     "Unconfined"}}}, container={"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}), "baseline",
     "1.25", False),
    ("pod seccomp Localhost, container RuntimeDefault", pod({"securityContext": {"seccompProfile": {"type":
     "Localhost", "localhostProfile": "p.json"}}}, container={"securityContext": {"seccompProfile": {"type":
     "RuntimeDefault"}}}), "baseline", "1.25", True),
    # check appArmorProfile: pod-level type Unconfined is forbidden even if the container sets RuntimeDefault
    ("pod AppArmor Unconfined, container RuntimeDefault", pod({"securityContext": {"appArmorProfile": {"type":
     "Unconfined"}}}, container={"securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}}), "baseline",
     "1.30", False),
    ("pod AppArmor RuntimeDefault, container Localhost", pod({"securityContext": {"appArmorProfile": {"type":
     "RuntimeDefault"}}}, container={"securityContext": {"appArmorProfile": {"type": "Localhost",
     "localhostProfile": "k8s-x"}}}), "baseline", "1.30", True),
    # check windowsHostProcess: pod-level hostProcess true is forbidden whatever the container says
    ("pod hostProcess true, container hostProcess false", pod({"securityContext": {"windowsOptions":
     {"hostProcess": True}}}, container={"securityContext": {"windowsOptions": {"hostProcess": False}}}),
     "baseline", "1.30", False),
    ("pod windowsOptions without hostProcess", pod({"securityContext": {"windowsOptions": {"runAsUserName":
     "ContainerUser"}}}), "baseline", "1.30", True),
    # check runAsNonRoot: a pod-level false is forbidden even when every container sets true
    ("pod runAsNonRoot false, container true", pod({"securityContext": {"runAsNonRoot": False}},
     container={"securityContext": {"runAsNonRoot": True}}), "restricted", "1.30", False),
    ("pod runAsNonRoot unset, container true", pod({"securityContext": {"seccompProfile": {"type":
     "RuntimeDefault"}, "runAsNonRoot": None}}, container={"securityContext": {"runAsNonRoot": True}}),
     "restricted", "1.30", True),
    # check runAsUser (1.23+): runAsUser 0 at the pod level is forbidden whatever the containers set
    ("pod runAsUser 0, container 1000", pod({"securityContext": {"runAsUser": 0}},
     container={"securityContext": {"runAsUser": 1000}}), "restricted", "1.23", False),
    ("pod runAsUser 0, container 1000, before 1.23", pod({"securityContext": {"runAsUser": 0}},
     container={"securityContext": {"runAsUser": 1000}}), "restricted", "1.22", True),
    # check seccompProfile_restricted (1.19+): a pod-level value that is not allowed is forbidden even when
    # every container sets RuntimeDefault
    ("restricted: pod seccomp Unconfined, container RuntimeDefault", pod({"securityContext": {"seccompProfile":
     {"type": "Unconfined"}}}, container={"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}),
     "restricted", "1.25", False),
    ("restricted: no pod seccomp, container RuntimeDefault", pod({"securityContext": {"runAsNonRoot": True,
     "seccompProfile": None}}, container={"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}),
     "restricted", "1.25", True),
    # -- versions before 1.22 --------------------------------------------------------------------------------
    # check seccompProfile_restricted starts at 1.19: before, a restricted pod needs no seccomp profile
    ("restricted without seccomp at 1.18", pod({"securityContext": {"seccompProfile": None}}), "restricted",
     "1.18", True),
    ("restricted without seccomp at 1.19", pod({"securityContext": {"seccompProfile": None}}), "restricted",
     "1.19", False),
    # check allowPrivilegeEscalation starts at 1.8
    ("allowPrivilegeEscalation unset at 1.7", pod(container={"securityContext": {"allowPrivilegeEscalation":
     None}}), "restricted", "1.7", True),
    ("allowPrivilegeEscalation unset at 1.8", pod(container={"securityContext": {"allowPrivilegeEscalation":
     None}}), "restricted", "1.8", False),
    # check capabilities_restricted (drop ALL) starts at 1.22
    ("capabilities not dropped at 1.21", pod(container={"securityContext": {"capabilities": None}}), "restricted",
     "1.21", True),
    ("capabilities not dropped at 1.22", pod(container={"securityContext": {"capabilities": None}}), "restricted",
     "1.22", False),
    # check seccompProfile_baseline 1.0-1.18 reads the alpha annotations; from 1.19 only the fields
    ("pod seccomp annotation unconfined at 1.18", pod(annotations={"seccomp.security.alpha.kubernetes.io/pod":
     "unconfined"}), "baseline", "1.18", False),
    ("pod seccomp annotation unconfined at 1.19", pod(annotations={"seccomp.security.alpha.kubernetes.io/pod":
     "unconfined"}), "baseline", "1.19", True),
    ("container seccomp annotation docker/default at 1.10", pod(annotations={
     "container.seccomp.security.alpha.kubernetes.io/app": "docker/default"}), "baseline", "1.10", True),
    ("container seccomp annotation localhost/ at 1.10", pod(annotations={
     "container.seccomp.security.alpha.kubernetes.io/app": "localhost/profile.json"}), "baseline", "1.10", True),
    ("container seccomp annotation unconfined at 1.10", pod(annotations={
     "container.seccomp.security.alpha.kubernetes.io/app": "unconfined"}), "baseline", "1.10", False),
    ("seccomp field Unconfined at 1.18 (fields not read yet)", pod(container={"securityContext":
     {"seccompProfile": {"type": "Unconfined"}}}), "baseline", "1.18", True),
    # -- volumes ---------------------------------------------------------------------------------------------
    # check restrictedVolumes: a volume with no source is an emptyDir once the API server defaulted it
    ("volume with no source", pod({"volumes": [{"name": "scratch"}]}), "restricted", "1.30", True),
    ("nfs volume", pod({"volumes": [{"name": "data", "nfs": {"server": "nfs.example", "path": "/x"}}]}),
     "restricted", "1.30", False),
    ("emptyDir volume", pod({"volumes": [{"name": "tmp", "emptyDir": {}}]}), "restricted", "1.30", True),
    ("image volume", pod({"volumes": [{"name": "img", "image": {"reference": "registry.example/d:1"}}]}),
     "restricted", "1.33", True),
]  # fmt: skip


def _clean(obj: Any) -> Any:
    """Drop the None values the cases use to unset a field of the base pod."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


@pytest.mark.parametrize(("name", "obj", "level", "version", "allowed"), CASES, ids=[c[0] for c in CASES])
def test_verdicts_agree_with_pod_security_admission(name: str, obj: dict[str, Any], level: str, version: str,
                                                    allowed: bool) -> None:  # fmt: skip
    assert verdict(_clean(obj), level, version) is allowed, name


def test_the_base_pod_is_restricted_at_every_version() -> None:
    for minor in range(0, 38):
        assert verdict(_clean(pod()), "restricted", f"1.{minor}"), minor


def test_pod_level_findings_carry_no_container() -> None:
    """A pod-level violation is reported once, for the pod, not once per container that inherits nothing."""
    obj = _clean(pod({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}},
                     container={"securityContext": {"seLinuxOptions": {"type": "container_t"}}}))  # fmt: skip
    found = [f for f in evaluate(RULES, [to_resource(obj)], cross=False) if f.rule.id == "STK-PSS-B-010"]
    assert [(f.container) for f in found] == [""]
