"""Regenerate src/stockade/sensor/cri/cri_pb2.py and its type stub (.pyi) from cri.proto (needs grpcio-tools,
a development tool only)."""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

HERE = Path(__file__).resolve().parent.parent / "src" / "stockade" / "sensor" / "cri"

if __name__ == "__main__":
    rc = protoc.main(["protoc", f"-I{HERE}", f"--python_out={HERE}", f"--pyi_out={HERE}", str(HERE / "cri.proto")])
    sys.exit(rc)
