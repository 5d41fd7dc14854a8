"""Version ordering, one per ecosystem, as each package manager defines it.

- Debian/Ubuntu: dpkg's algorithm (Debian Policy 5.6.12): [epoch:]upstream[-revision]; each part
  compared as alternating non-digit and digit runs; in non-digit runs `~` sorts before everything
  (even the end of the run), letters before non-letters; digit runs compare as numbers.
- Alpine/Wolfi: apk's rules: dot-separated numbers (later ones with a leading zero compare as
  decimal fractions), an optional letter, suffixes `_alpha _beta _pre _rc` (before the release) and
  `_cvs _svn _git _hg _p` (after it), each with an optional number, then `-rN`.
- RPM ecosystems: rpmvercmp on epoch, version, release (alphanumeric segments; `~` sorts before
  and `^` after the end of a version).
- PyPI: PEP 440 through `packaging`.
- npm and other semver ecosystems: Semantic Versioning 2.0 precedence.
Written from those public specifications; every function returns -1, 0 or 1.
"""

from __future__ import annotations

import functools
import re

from packaging.version import InvalidVersion, Version


def _cmp(a, b) -> int:
    return (a > b) - (a < b)


# --- Debian ---------------------------------------------------------------------------------------


def _deb_order(c: str) -> int:
    if c == "~":
        return -1
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _deb_part(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        # non-digit run, character by character (end of string counts as 0, after '~')
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ca = _deb_order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            cb = _deb_order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ca != cb:
                return _cmp(ca, cb)
            i += 1
            j += 1
        na = nb = 0
        while i < len(a) and a[i].isdigit():
            na = na * 10 + ord(a[i]) - 48
            i += 1
        while j < len(b) and b[j].isdigit():
            nb = nb * 10 + ord(b[j]) - 48
            j += 1
        if na != nb:
            return _cmp(na, nb)
    return 0


def _deb_split(v: str) -> tuple[int, str, str]:
    v = v.strip()
    epoch = 0
    if ":" in v:
        e, v = v.split(":", 1)
        epoch = int(e) if e.isdigit() else 0
    upstream, _, revision = v.rpartition("-") if "-" in v else (v, "", "")
    return epoch, upstream, revision


def debian_compare(a: str, b: str) -> int:
    ea, ua, ra = _deb_split(a)
    eb, ub, rb = _deb_split(b)
    return _cmp(ea, eb) or _deb_part(ua, ub) or _deb_part(ra, rb)


# --- Alpine ---------------------------------------------------------------------------------------

_APK_SUFFIX = {"alpha": -4, "beta": -3, "pre": -2, "rc": -1, "cvs": 1, "svn": 2, "git": 3, "hg": 4, "p": 5}
_APK_RE = re.compile(r"^(\d+(?:\.\d+)*)([a-z]?)((?:_[a-z]+\d*)*)(?:-r(\d+))?$")


def _apk_parse(v: str):
    m = _APK_RE.match(v.strip())
    if not m:
        return None
    nums, letter, suffixes, rev = m.groups()
    sfx = []
    for s in suffixes.split("_")[1:]:
        name = s.rstrip("0123456789")
        if name not in _APK_SUFFIX:
            return None
        sfx.append((_APK_SUFFIX[name], int(s[len(name) :] or 0)))
    return nums.split("."), letter, sfx, int(rev or 0)


def _apk_nums(a: list[str], b: list[str]) -> int:
    for k, (x, y) in enumerate(zip(a, b, strict=False)):
        if k and (x.startswith("0") or y.startswith("0")):
            # apk (like Gentoo) reads a later component with a leading zero as a fraction: 1.01 < 1.1
            c = _cmp(x.rstrip("0"), y.rstrip("0"))
        else:
            c = _cmp(int(x), int(y))
        if c:
            return c
    return _cmp(len(a), len(b))


def alpine_compare(a: str, b: str) -> int:
    pa, pb = _apk_parse(a), _apk_parse(b)
    if pa is None or pb is None:
        return generic_compare(a, b)
    c = _apk_nums(pa[0], pb[0]) or _cmp(pa[1], pb[1])
    if c:
        return c
    sa, sb = pa[2], pb[2]
    for x, y in zip(sa, sb, strict=False):
        if x != y:
            return _cmp(x, y)
    if len(sa) != len(sb):
        # a suffix after the common part: pre-release kinds (negative rank) sort before none
        extra = sa[len(sb)] if len(sa) > len(sb) else sb[len(sa)]
        sign = 1 if len(sa) > len(sb) else -1
        return sign if extra[0] > 0 else -sign
    return _cmp(pa[3], pb[3])


# --- RPM ------------------------------------------------------------------------------------------


def rpmvercmp(a: str, b: str) -> int:
    if a == b:
        return 0
    i = j = 0
    while i < len(a) or j < len(b):
        while i < len(a) and not a[i].isalnum() and a[i] not in "~^":
            i += 1
        while j < len(b) and not b[j].isalnum() and b[j] not in "~^":
            j += 1
        ta = a[i] if i < len(a) else ""
        tb = b[j] if j < len(b) else ""
        if ta == "~" or tb == "~":
            if ta != "~":
                return 1
            if tb != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if ta == "^" or tb == "^":
            if not ta:
                return -1
            if not tb:
                return 1
            if ta != "^":
                return 1
            if tb != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not ta or not tb:
            break
        if ta.isdigit():
            m = re.match(r"\d+", a[i:]).group()
            n = re.match(r"\d*", b[j:]).group()
            if not n:
                return 1  # a numeric segment is newer than an alphabetic one
            i, j = i + len(m), j + len(n)
            m, n = m.lstrip("0"), n.lstrip("0")
            c = _cmp(len(m), len(n)) or _cmp(m, n)
        else:
            m = re.match(r"[A-Za-z]+", a[i:]).group()
            n = re.match(r"[A-Za-z]*", b[j:]).group()
            if not n:
                return -1
            i, j = i + len(m), j + len(n)
            c = _cmp(m, n)
        if c:
            return c
    return _cmp(i < len(a), j < len(b))


def rpm_compare(a: str, b: str) -> int:
    def evr(v: str) -> tuple[int, str, str]:
        e, _, rest = v.partition(":") if ":" in v else ("0", "", v)
        ver, _, rel = rest.partition("-")
        return (int(e) if e.isdigit() else 0), ver, rel

    ea, va, ra = evr(a.strip())
    eb, vb, rb = evr(b.strip())
    return _cmp(ea, eb) or rpmvercmp(va, vb) or (rpmvercmp(ra, rb) if ra and rb else 0)


# --- PEP 440, semver, generic ---------------------------------------------------------------------


def pep440_compare(a: str, b: str) -> int:
    try:
        return _cmp(Version(a), Version(b))
    except InvalidVersion:
        return generic_compare(a, b)


_SEMVER_RE = re.compile(r"^[v=\s]*(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def semver_compare(a: str, b: str) -> int:
    ma, mb = _SEMVER_RE.match(a.strip()), _SEMVER_RE.match(b.strip())
    if not ma or not mb:
        return generic_compare(a, b)
    c = _cmp(tuple(int(x or 0) for x in ma.groups()[:3]), tuple(int(x or 0) for x in mb.groups()[:3]))
    if c:
        return c
    pa, pb = ma.group(4), mb.group(4)
    if pa is None or pb is None:
        return _cmp(pa is None, pb is None)  # a release sorts after its pre-releases
    for x, y in zip(pa.split("."), pb.split("."), strict=False):
        if x.isdigit() and y.isdigit():
            c = _cmp(int(x), int(y))
        elif x.isdigit() or y.isdigit():
            c = -1 if x.isdigit() else 1  # numeric identifiers sort before alphanumeric ones
        else:
            c = _cmp(x, y)
        if c:
            return c
    return _cmp(len(pa.split(".")), len(pb.split(".")))


def generic_compare(a: str, b: str) -> int:
    """Digit runs as numbers, the rest as text: a sane order for ecosystems we do not know."""
    return _deb_part(a.replace("~", ""), b.replace("~", ""))


# Maven's ComparableVersion, simplified: items split at '.', '-' and digit/letter changes; numbers
# numerically; the well-known qualifiers in their order, pre-releases below the release ("" / ga /
# final), sp above it, unknown words after sp, alphabetically; a number ranks above any word.
_MVN_QUAL = {"alpha": 0, "a": 0, "beta": 1, "b": 1, "milestone": 2, "m": 2, "rc": 3, "cr": 3,
             "snapshot": 4, "": 5, "ga": 5, "final": 5, "release": 5, "sp": 6}
_MVN_ITEM = re.compile(r"\d+|[a-z]+")


def _mvn_items(v: str) -> list:
    items: list = [int(t) if t.isdigit() else t for t in _MVN_ITEM.findall(v.lower())]
    while items and items[-1] in (0, "", "ga", "final", "release"):
        items.pop()  # 1.0.0 == 1.0 == 1-final
    return items


def _mvn_item_cmp(x, y) -> int:
    if isinstance(x, int) and isinstance(y, int):
        return _cmp(x, y)
    if isinstance(x, int):
        return 1 if isinstance(y, str) or x else 0
    if isinstance(y, int):
        return -_mvn_item_cmp(y, x)
    rx, ry = _MVN_QUAL.get(x, 7), _MVN_QUAL.get(y, 7)
    return _cmp(rx, ry) or (_cmp(x, y) if rx == 7 else 0)


def maven_compare(a: str, b: str) -> int:
    ia, ib = _mvn_items(a), _mvn_items(b)
    for k in range(max(len(ia), len(ib))):
        x = ia[k] if k < len(ia) else None
        y = ib[k] if k < len(ib) else None
        if x is None:  # the shorter one continues as the release: 0 against a number, "" against a word
            x = 0 if isinstance(y, int) else ""
        if y is None:
            y = 0 if isinstance(x, int) else ""
        c = _mvn_item_cmp(x, y)
        if c:
            return c
    return 0


_BY_ECOSYSTEM = {
    "maven": maven_compare,
    "debian": debian_compare,
    "ubuntu": debian_compare,
    "alpine": alpine_compare,
    "wolfi": alpine_compare,
    "chainguard": alpine_compare,
    "pypi": pep440_compare,
    "npm": semver_compare,
    "go": semver_compare,
    "crates.io": semver_compare,
    "red hat": rpm_compare,
    "rocky linux": rpm_compare,
    "almalinux": rpm_compare,
    "opensuse": rpm_compare,
    "suse": rpm_compare,
    "mageia": rpm_compare,
    "photon os": rpm_compare,
    "azure linux": rpm_compare,
}


def base_ecosystem(ecosystem: str) -> str:
    """'Debian:12' -> 'debian'; 'Alpine:v3.19' -> 'alpine'; 'PyPI' -> 'pypi'."""
    return ecosystem.split(":", 1)[0].strip().lower()


def comparator(ecosystem: str):
    return _BY_ECOSYSTEM.get(base_ecosystem(ecosystem), generic_compare)


def compare(ecosystem: str, a: str, b: str) -> int:
    return comparator(ecosystem)(a, b)


def sort_key(ecosystem: str):
    return functools.cmp_to_key(comparator(ecosystem))
