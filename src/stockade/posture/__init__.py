"""Kubernetes posture: rules as YAML data evaluated over manifests and cluster snapshots."""
