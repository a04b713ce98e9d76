"""Admission control: posture rules and image gates applied to every create/update at the Kubernetes API."""
