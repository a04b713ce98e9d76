"""Kubernetes posture: rules as YAML data evaluated over manifests and cluster snapshots.

The public surface other engines (admission, the server's agent) use; the modules behind it are posture's own."""

from stockade.posture.engine import evaluate, load_rules, parse_rules
from stockade.posture.exceptions import Exceptions
from stockade.posture.resources import ManifestError
from stockade.posture.resources import load as load_manifests
from stockade.posture.rule import LATEST_K8S, OLDEST_K8S, PostureFinding, Rule, parse_version

__all__ = [
    "LATEST_K8S",
    "OLDEST_K8S",
    "Exceptions",
    "ManifestError",
    "PostureFinding",
    "Rule",
    "evaluate",
    "load_manifests",
    "load_rules",
    "parse_rules",
    "parse_version",
]
