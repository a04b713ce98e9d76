"""`stockade sensor`: the node sensor (eBPF), replays of Falco and Tetragon events, and its manifests."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import orjson
import typer

from stockade.cli.common import (
    CLUSTER_OPT,
    EXIT_INPUT,
    EXIT_USAGE,
    SERVER_OPT,
    TOKEN_OPT,
    alert_sender,
    err,
    input_errors,
    write,
)
from stockade.model import StockadeError

sensor_app = typer.Typer(help="Node sensor: eBPF runtime events and workload threat detection.", no_args_is_help=True)


CRI_HELP = "Container runtime (CRI) socket to name pods and images: a path, 'auto' (the usual places, also under /host) or 'none'"  # noqa: E501
API_SERVER_HELP = "The API server's HOST:PORT, for the rules on pods calling it (repeatable; in a pod $KUBERNETES_SERVICE_HOST is added)"  # noqa: E501


@sensor_app.command("run")
def sensor_run(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Append alerts (JSON lines) here")] = None,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0: until interrupted)")] = 0,
    rules: Annotated[list[Path] | None, typer.Option(help="Extra rule file (YAML); repeatable")] = None,
    cpu_share: Annotated[float, typer.Option(help="Most of one CPU the sensor's own processing may use")] = 0.5,
    queue_size: Annotated[int, typer.Option(help="Events buffered before they are dropped (and counted)")] = 65536,
    learn: Annotated[float, typer.Option(help="Behavioural baseline: learning window in seconds (0: off)")] = 0,
    kubelet_pods: Annotated[
        Path | None, typer.Option(help="The kubelet's pod list (JSON, /pods) to name pods and images")
    ] = None,
    stats: Annotated[Path | None, typer.Option(help="Write counters (events, dropped, alerts) here at the end")] = None,
    memory_limit: Annotated[
        float, typer.Option(help="Most resident memory (MiB) of the sensor and bpftrace; 0: no limit")
    ] = 400,
    cri_socket: Annotated[str, typer.Option(help=CRI_HELP)] = "auto",
    api_server: Annotated[list[str] | None, typer.Option(help=API_SERVER_HELP)] = None,
    server: Annotated[str | None, SERVER_OPT] = None,
    cluster: Annotated[str | None, CLUSTER_OPT] = None,
    token: Annotated[str | None, TOKEN_OPT] = None,
) -> None:
    """Collect process, file and network events with eBPF (bpftrace) and raise alerts."""
    from stockade.sensor import service

    with input_errors():
        try:
            out = output.open("ab") if output else sys.stdout.buffer
        except OSError as exc:
            raise StockadeError(f"{output}: cannot write ({exc.strerror})") from None
        deltas = alert_sender(server, cluster, token, "sensor")
        sensor, detector = service.start(out, rules, learn, cri_socket, kubelet_pods, api_server, deltas, queue_size,
                                         cpu_share, memory_limit, log=err)  # fmt: skip
    err("sensor ready")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        service.run_until(sensor, stop, duration)
    counters = service.finish(sensor, detector, deltas)
    err(f"sensor stopped: {counters}")
    if stats is not None:
        stats.write_bytes(orjson.dumps(counters))
    if sensor.failed:
        err(f"[red]error:[/] {sensor.failed}")
        raise typer.Exit(EXIT_INPUT)


@sensor_app.command("replay")
def sensor_replay(
    files: Annotated[list[Path], typer.Argument(help="Falco JSON output or Tetragon JSON export (JSON lines)")],
    rules: Annotated[list[Path] | None, typer.Option(help="Extra rule file (YAML); repeatable")] = None,
) -> None:
    """Run stockade's workload rules over events from Falco or Tetragon; alerts as JSON lines."""
    from stockade.sensor.service import replay

    with input_errors():
        skipped = replay(files, sys.stdout.buffer, rules)
    if skipped:
        err(f"[yellow]warning:[/] {skipped} line(s) not a Falco or Tetragon event")


@sensor_app.command("manifests")
def sensor_manifests(
    namespace: Annotated[str, typer.Option(help="Namespace to install into")] = "stockade",
    image: Annotated[str, typer.Option(help="stockade container image")] = "ghcr.io/stockade/stockade:latest",
    server: Annotated[str, typer.Option(help="Ship alerts to this stockade server (else: the publisher's log)")] = "",
    cluster: Annotated[str, typer.Option(help="This cluster's name on the server")] = "",
    token_secret: Annotated[
        str, typer.Option(help="Secret (key 'token') with the cluster's ingestion token")
    ] = "stockade-cluster",
) -> None:
    """The sensor DaemonSet: the eBPF collector and the publisher beside it on each node, as YAML."""
    import yaml

    from stockade.sensor.manifests import render as render_sensor

    if server and not cluster:
        err("[red]error:[/] --server needs --cluster (the cluster's name on the server)")
        raise typer.Exit(EXIT_USAGE)
    docs = render_sensor(namespace, image, server=server, cluster=cluster, token_secret=token_secret)
    write(yaml.safe_dump_all(docs, sort_keys=False).encode(), None)


