"""What clusters and CI may send, as explicit pydantic models: types, ranges (timestamps within a sane window,
counts, scores), list sizes and nesting depth. A document that breaks one is refused whole with 400, naming the
field (``items[3].time``); text is still cleaned and cut where it is stored (store/base.py clip_text), so an
over-long name is shortened, not refused. Unknown fields are ignored (newer collectors may send more)."""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from stockade.server.store.base import BadRequest

EARLIEST = 946_684_800.0  # 2000-01-01: nothing stockade records is older
FUTURE_SLACK = 2 * 86_400.0  # clocks run ahead; two days is plenty
MAX_DEPTH = 32  # evidence, inventories, frameworks: real documents are a few levels deep
MAX_INT = 2**31 - 1


def _time(value: Any) -> Any:
    """Epoch seconds or RFC 3339 text within [2000-01-01, now + 2 days]; text that is not a time is left to the
    store (which uses the time of arrival)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("a time is epoch seconds or RFC 3339 text")
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, str):
        if not value:
            return value
        try:
            ts = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError):
            return value
    else:
        raise ValueError("a time is epoch seconds or RFC 3339 text")
    if not math.isfinite(ts) or not EARLIEST <= ts <= time.time() + FUTURE_SLACK:
        raise ValueError(f"{value!r} is not a time between 2000 and now")
    return value


def _depth(value: Any, limit: int = MAX_DEPTH) -> Any:
    """The value, when its lists and mappings nest at most ``limit`` deep and its integers fit the 64 bits JSON
    columns store (an integer past them cannot be written back out)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            if d > limit:
                raise ValueError(f"nested deeper than {limit} levels")
            stack += [(x, d + 1) for x in (v.values() if isinstance(v, dict) else v)]
        elif isinstance(v, int) and not -(2**63) <= v < 2**63:
            raise ValueError(f"{v} is past the 64-bit integers stored")
    return value


Time = Annotated[Any, AfterValidator(_time)]
Shallow = Annotated[Any, AfterValidator(_depth)]
Scalar = Annotated[str | int | float | bool | None, AfterValidator(_depth)]  # integers within 64 bits
Strings = Annotated[list[Scalar], Field(max_length=256)]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AlertIn(_In):
    rule: Annotated[str, Field(min_length=1)]
    severity: str = ""
    count: Annotated[int, Field(ge=1, le=MAX_INT, strict=True)] = 1
    time: Time = None
    last_time: Time = None
    tactics: Strings | None = None
    techniques: Strings | None = None
    source_ips: Strings | None = None
    evidence: Annotated[list[Shallow], Field(max_length=64)] | None = None


class ContainerIn(_In):
    image: Annotated[str, Field(min_length=1)]


class RecommendationIn(_In):
    rule: Annotated[str, Field(min_length=1)]
    frameworks: Shallow = None
    objects: Annotated[list[Scalar], Field(max_length=10_000)] | None = None


class ControlIn(_In):
    control: Annotated[str, Field(min_length=1, max_length=200)]
    status: Literal["PASS", "FAIL", "MANUAL"]
    title: Scalar = ""
    rules: Strings = []
    failing_objects: Annotated[list[Scalar], Field(max_length=10_000)] = []
    how: Scalar = ""


class FrameworkIn(_In):
    title: Scalar = ""
    score: Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)] = 0.0
    passed: Annotated[int, Field(ge=0, le=MAX_INT)] = 0
    total: Annotated[int, Field(ge=0, le=MAX_INT)] = 0
    manual: Annotated[int, Field(ge=0, le=MAX_INT)] = 0
    controls: Annotated[list[ControlIn], Field(max_length=10_000)] = []


class SnapshotIn(_In):
    k8s_version: Scalar = ""
    nodes: Annotated[int, Field(ge=0, le=1_000_000)] | None = 0
    components: dict[str, Scalar] | None = None
    containers: Annotated[list[ContainerIn], Field(max_length=500_000)] = []
    recommendations: Annotated[list[RecommendationIn], Field(max_length=500_000)] = []
    compliance: dict[str, FrameworkIn] = {}


class ViolationIn(_In):
    time: Time = None


class ScanIn(_In):
    ref: Annotated[str, Field(min_length=1)]
    findings: Annotated[list[dict[str, Shallow]], Field(max_length=200_000)] = []
    scanned_at: Time = None
    inventory: Shallow = None


MODELS: dict[str, type[_In]] = {"alerts": AlertIn, "snapshot": SnapshotIn, "violations": ViolationIn, "scans": ScanIn}


def check(kind: str, items: list[Any], where: str = "items") -> None:
    """Each item against the model of ``kind``; BadRequest naming the first field at fault."""
    model = MODELS.get(kind)
    if model is None:
        return
    for i, item in enumerate(items):
        try:
            model.model_validate(item)
        except ValidationError as exc:
            e = exc.errors()[0]
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
            raise BadRequest(f"{where}[{i}]{loc}: {e['msg']}") from None
