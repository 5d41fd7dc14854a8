"""Version ordering per ecosystem: cases from each package manager's documented rules."""

import pytest

from agent.imagegate import versions

DEBIAN = [  # a < b
    ("1.0", "1.1"),
    ("1.0~rc1", "1.0"),  # ~ sorts before the end
    ("1.0~~", "1.0~"),
    ("1.0", "1.0a"),
    ("1.0a", "1.0+"),  # letters before non-letters
    ("1.2.13.dfsg-1", "1:1.0"),  # epoch wins
    ("3.0.11-1~deb12u1", "3.0.11-1"),
    ("3.0.11-1", "3.0.11-1+deb12u1"),
    ("2.9", "2.10"),
    ("1.0-1", "1.0-1.1"),
]
ALPINE = [
    ("1.2.3", "1.2.4"),
    ("1.2.3_rc1", "1.2.3"),
    ("1.2.3_alpha", "1.2.3_beta"),
    ("1.2.3", "1.2.3_p1"),
    ("1.2.3-r0", "1.2.3-r1"),
    ("1.2.3-r9", "1.2.3-r10"),
    ("1.2", "1.2.1"),
    ("1.2a", "1.2b"),
    ("1.01", "1.1"),  # later components with a leading zero compare as fractions
    ("3.1.4-r5", "3.1.4_p1-r0"),
]
RPM = [
    ("1.0", "1.1"),
    ("1.0~rc1", "1.0"),
    ("1.0", "1.0^git1"),
    ("1.0^git1", "1.0.1"),
    ("1.0-1.el9", "1.0-2.el9"),
    ("2.0", "1:1.0"),
    ("1.a", "1.1"),  # numeric segments are newer than alphabetic ones
]
PEP440 = [("1.0.dev1", "1.0a1"), ("1.0a1", "1.0"), ("1.0", "1.0.post1"), ("2.0", "10.0"), ("1.0", "1!0.1")]
SEMVER = [
    ("1.0.0-alpha", "1.0.0-alpha.1"),
    ("1.0.0-alpha.1", "1.0.0-alpha.beta"),
    ("1.0.0-beta.2", "1.0.0-beta.11"),
    ("1.0.0-rc.1", "1.0.0"),
    ("1.9.0", "1.10.0"),
    ("v1.2.3", "1.2.4"),
]


@pytest.mark.parametrize(
    "eco,cases",
    [("Debian:12", DEBIAN), ("Alpine:v3.19", ALPINE), ("Rocky Linux:9", RPM), ("PyPI", PEP440), ("npm", SEMVER)],
)
def test_ordering(eco, cases):
    for a, b in cases:
        assert versions.compare(eco, a, b) == -1, (a, b)
        assert versions.compare(eco, b, a) == 1, (b, a)
        assert versions.compare(eco, a, a) == 0


def test_equal_forms():
    assert versions.debian_compare("1.0", "0:1.0-0") == 0
    assert versions.semver_compare("1.0.0+build1", "1.0.0+build2") == 0
    assert versions.pep440_compare("1.0", "1.0.0") == 0


def test_garbage_never_raises():
    for eco in ("Debian", "Alpine", "PyPI", "npm", "Red Hat", "Unknown"):
        for a, b in (("", "1"), ("!!", "??"), ("1..2", "1.2"), ("x" * 300, "1")):
            assert versions.compare(eco, a, b) in (-1, 0, 1)
