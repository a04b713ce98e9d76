"""Control-plane threat detection: Kubernetes audit events in, alerts out."""
