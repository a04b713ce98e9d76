"""Version comparison for every scheme stockade matches: dpkg, rpm, apk, PEP 440, semver/Go, Maven, NuGet,
RubyGems and Composer.

dpkg, rpm and apk are written here: they are short, stable algorithms on the hot path of OS matching,
and univers' implementations build attrs objects that cost 20-30 µs a comparison. They are
property-tested against ``dpkg --compare-versions`` and rpm's own ``rpm.vercmp``. PEP 440 uses
``packaging``; Maven, NuGet, RubyGems and Composer use ``univers``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from itertools import zip_longest
from typing import Any

from packaging.version import InvalidVersion as _PepInvalid
from packaging.version import Version as _PepVersion


class VersionError(ValueError):
    """A version string the scheme cannot parse."""


def _cmp(a: Any, b: Any) -> int:
    return int(a > b) - int(a < b)


# --- dpkg (Debian Policy 5.6.12) ----------------------------------------------------------------------


def _dpkg_order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _dpkg_part(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _dpkg_order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _dpkg_order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return -1 if ac < bc else 1
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return -1 if first_diff < 0 else 1
    return 0


@lru_cache(maxsize=65536)
def _dpkg_split(v: str) -> tuple[int, str, str]:
    v = v.strip()
    epoch = 0
    if ":" in v:
        e, _, v = v.partition(":")
        if not e.isdigit():
            raise VersionError(f"bad epoch in dpkg version {v!r}")
        epoch = int(e)
    upstream, sep, revision = v.rpartition("-")
    if not sep:
        upstream, revision = v, ""
    if not upstream:
        raise VersionError(f"empty dpkg version {v!r}")
    return epoch, upstream, revision


_DPKG_PAD = 24
_DPKG_RUNS = re.compile(r"(\D*)(\d*)")


@lru_cache(maxsize=131072)
def _dpkg_key(part: str) -> tuple[tuple[tuple[int, ...], int], ...] | None:
    """A sort key equal to dpkg's order: (non-digit run, number) pairs, each run as character orders ended
    by 0 (orders are never 0: '~' is -1), padded to a fixed length so that a missing pair compares as an
    empty run and 0. None when the part has more runs than the padding (then the loop below decides)."""
    pairs = []
    for nd, num in _DPKG_RUNS.findall(part):
        if not nd and not num:
            continue
        pairs.append(((*tuple(_dpkg_order(c) for c in nd), 0), int(num) if num else 0))
    if len(pairs) > _DPKG_PAD:
        return None
    pairs += [((0,), 0)] * (_DPKG_PAD - len(pairs))
    return tuple(pairs)


def _dpkg_fast(a: str, b: str) -> int:
    ka, kb = _dpkg_key(a), _dpkg_key(b)
    if ka is None or kb is None:
        return _dpkg_part(a, b)
    return (ka > kb) - (ka < kb)


def dpkg_compare(a: str, b: str) -> int:
    ea, ua, ra = _dpkg_split(a)
    eb, ub, rb = _dpkg_split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _dpkg_fast(ua, ub) or _dpkg_fast(ra, rb)


# --- rpm (rpmvercmp) ------------------------------------------------------------------------------------

_RPM_SEG = re.compile(r"(\d+|[a-zA-Z]+|~|\^)")


def _rpmvercmp(a: str, b: str) -> int:
    if a == b:
        return 0
    sa = [s for s in re.split(r"[^a-zA-Z0-9~^]+", a)]
    sb = [s for s in re.split(r"[^a-zA-Z0-9~^]+", b)]
    ta = [t for s in sa for t in _RPM_SEG.findall(s)]
    tb = [t for s in sb for t in _RPM_SEG.findall(s)]
    i = 0
    while True:
        x = ta[i] if i < len(ta) else None
        y = tb[i] if i < len(tb) else None
        if x == "~" or y == "~":
            if x != "~":
                return 1
            if y != "~":
                return -1
            i += 1
            continue
        if x == "^" or y == "^":
            if x is None:
                return -1
            if y is None:
                return 1
            if x != "^":
                return 1
            if y != "^":
                return -1
            i += 1
            continue
        if x is None or y is None:
            if x is None and y is None:
                return 0
            return -1 if x is None else 1
        xd, yd = x.isdigit(), y.isdigit()
        if xd != yd:
            return 1 if xd else -1
        if xd:
            xi, yi = int(x), int(y)
            if xi != yi:
                return -1 if xi < yi else 1
        elif x != y:
            return -1 if x < y else 1
        i += 1


@lru_cache(maxsize=65536)
def _rpm_split(v: str) -> tuple[int, str, str]:
    epoch = 0
    if ":" in v:
        e, _, v = v.partition(":")
        epoch = int(e) if e.isdigit() else 0
    version, sep, release = v.rpartition("-")
    if not sep:
        version, release = v, ""
    return epoch, version, release


def rpm_compare(a: str, b: str) -> int:
    ea, va, ra = _rpm_split(a)
    eb, vb, rb = _rpm_split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    c = _rpmvercmp(va, vb)
    if c or not ra or not rb:  # a missing release matches any release
        return c
    return _rpmvercmp(ra, rb)


# --- apk (apk-tools version.c) -------------------------------------------------------------------------

_APK = re.compile(
    r"^(\d+(?:\.\d+)*)([a-z]?)(\d*)((?:_(?:alpha|beta|pre|rc|cvs|svn|git|hg|p)\d*)*)(?:-r(\d+))?$"
)  # "6.6.2p1" (letter and number, as OpenSSH versions) is accepted like apk-tools does


def _apk_repair(v: str) -> str:
    """Fix the typos found in Alpine's own secdb: "0.12.5.-r0", "10.2.22.r0", "1.11-20-r0", "10.0.11-0"."""
    v = re.sub(r"\.(-r\d+)$", r"\1", v)
    v = re.sub(r"\.r(\d+)$", r"-r\1", v)
    v = re.sub(r"-(\d+)$", r"-r\1", v) if "-r" not in v else v
    main, sep, rev = v.rpartition("-r") if "-r" in v else (v, "", "")
    return main.replace("-", ".") + sep + rev


_APK_SUFFIX = {"alpha": -4, "beta": -3, "pre": -2, "rc": -1, "cvs": 1, "svn": 2, "git": 3, "hg": 4, "p": 5}


@lru_cache(maxsize=65536)
def _apk_key(v: str) -> tuple[tuple[int, ...], tuple[int, int], tuple[tuple[int, int], ...], int]:
    m = _APK.match(v.strip()) or _APK.match(_apk_repair(v.strip()))
    if not m:
        raise VersionError(f"not an apk version: {v!r}")
    nums = tuple(int(x) for x in m.group(1).split("."))
    letter = (ord(m.group(2)) if m.group(2) else 0, int(m.group(3) or 0))
    suffixes = []
    for s in re.findall(r"_([a-z]+)(\d*)", m.group(4)):
        suffixes.append((_APK_SUFFIX[s[0]], int(s[1] or 0)))
    suffixes.append((0, 0))  # no suffix sorts between pre-releases and post-releases
    return nums, letter, tuple(suffixes), int(m.group(5) or 0)


def apk_compare(a: str, b: str) -> int:
    na, la, sa, ra = _apk_key(a)
    nb, lb, sb, rb = _apk_key(b)
    for x, y in zip_longest(na, nb, fillvalue=-1):
        if x != y:
            return -1 if x < y else 1
    return _cmp((la, sa, ra), (lb, sb, rb))


# --- PEP 440 --------------------------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def _pep(v: str) -> _PepVersion:
    try:
        return _PepVersion(v)
    except _PepInvalid:
        raise VersionError(f"not a PEP 440 version: {v!r}") from None


def pep440_compare(a: str, b: str) -> int:
    return _cmp(_pep(a), _pep(b))


# --- semver 2.0 (npm, crates.io, Go modules with a leading v) -----------------------------------------

_SEMVER = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


@lru_cache(maxsize=65536)
def _semver_key(v: str) -> tuple[object, ...]:
    m = _SEMVER.match(v.strip())
    if not m:
        raise VersionError(f"not a semantic version: {v!r}")
    core = tuple(int(x or 0) for x in m.group(1, 2, 3))
    pre = m.group(4)
    if pre is None:
        return core, (1,)  # a release sorts after its pre-releases
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return core, (0, ids)


def semver_compare(a: str, b: str) -> int:
    return _cmp(_semver_key(a), _semver_key(b))


# --- schemes from univers ----------------------------------------------------------------------------


def _univers(cls_name: str) -> Callable[[str, str], int]:
    @lru_cache(maxsize=65536)
    def parse(v: str) -> object:
        import univers.versions as uv

        try:
            return getattr(uv, cls_name)(v)
        except Exception as exc:  # univers raises several types for bad input
            raise VersionError(f"not a {cls_name}: {v!r} ({exc})") from None

    def compare(a: str, b: str) -> int:
        return _cmp(parse(a), parse(b))

    return compare


maven_compare = _univers("MavenVersion")
nuget_compare = _univers("NugetVersion")


# --- RubyGems (Gem::Version) by hand: univers recomputes canonical segments on every comparison ----------


@lru_cache(maxsize=65536)
def _gem_segments(v: str) -> tuple[int | str, ...]:
    v = v.strip()
    if not re.match(r"^[0-9]+(?:\.[0-9a-zA-Z]+)*(?:-[0-9A-Za-z.-]+)?$", v):
        raise VersionError(f"not a RubyGems version: {v!r}")
    v = v.replace("-", ".pre.")
    segs: list[int | str] = [int(x) if x.isdigit() else x for x in re.findall(r"[0-9]+|[a-z]+", v.lower())]
    # canonical form: trailing zeros dropped from the release part and from the prerelease part
    first_str = next((i for i, x in enumerate(segs) if isinstance(x, str)), len(segs))
    release, pre = segs[:first_str], segs[first_str:]
    while release and release[-1] == 0:
        release.pop()
    while pre and pre[-1] == 0:
        pre.pop()
    return tuple(release + pre)


def gem_compare(a: str, b: str) -> int:
    sa, sb = _gem_segments(a), _gem_segments(b)
    for x, y in zip_longest(sa, sb, fillvalue=0):
        if x == y:
            continue
        if isinstance(x, str) and isinstance(y, int):
            return -1
        if isinstance(x, int) and isinstance(y, str):
            return 1
        return -1 if x < y else 1  # type: ignore[operator]
    return 0


_composer_compare = _univers("ComposerVersion")


def composer_compare(a: str, b: str) -> int:
    return _composer_compare(a.removeprefix("v"), b.removeprefix("v"))


SCHEMES: dict[str, Callable[[str, str], int]] = {
    "deb": dpkg_compare,
    "rpm": rpm_compare,
    "apk": apk_compare,
    "pypi": pep440_compare,
    "npm": semver_compare,
    "cargo": semver_compare,
    "golang": semver_compare,
    "maven": maven_compare,
    "nuget": nuget_compare,
    "gem": gem_compare,
    "composer": composer_compare,
}


def compare(ecosystem: str, a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` sorts before, equal to or after ``b`` in the ecosystem's scheme."""
    try:
        fn = SCHEMES[ecosystem]
    except KeyError:
        raise VersionError(f"no version scheme for ecosystem {ecosystem!r}") from None
    return fn(a, b)
