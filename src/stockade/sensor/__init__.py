"""Node sensor: process, file and network events from eBPF (bpftrace), attributed to containers, and rules."""
