"""The ``stockade`` command: one module per command group, each command parsing its arguments and calling one
engine function."""

from __future__ import annotations

import typer

from stockade import __version__
from stockade.cli import admission, audit, image, intel, posture, rules, sensor, server

app = typer.Typer(
    name="stockade",
    help="Container security: image inventory (SBOM) and more. Exit codes: 0 ok, 1 bad input, 2 usage.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print stockade's version."""
    typer.echo(__version__)


app.command()(image.sbom)
app.command()(image.scan)
app.add_typer(image.db_app, name="db")
app.command()(posture.posture)
app.command("node-check")(posture.node_check)
app.add_typer(admission.admission_app, name="admission")
app.add_typer(audit.audit_app, name="audit")
app.add_typer(sensor.sensor_app, name="sensor")
app.add_typer(rules.rules_app, name="rules")
app.add_typer(intel.intel_app, name="intel")
app.add_typer(server.server_app, name="server")
app.command("agent")(server.agent)
app.command("publish")(server.publish)


if __name__ == "__main__":  # pragma: no cover
    app()
