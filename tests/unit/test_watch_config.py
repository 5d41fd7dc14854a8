"""The watch list of sensitive reads (probes.watch_reads): what the loader accepts, and its clear errors."""

import pytest

from agent.config import ProbeConfig
from agent.sensors.abi import Cfg
from agent.sensors.loader import LoadError, _watch_entries, validate


def test_defaults_split_into_prefixes_and_patterns():
    prefixes, slots = _watch_entries(ProbeConfig().watch_reads)
    sa = b"/var/run/secrets/kubernetes.io/serviceaccount/"
    assert {b"/etc/shadow", b"/etc/sudoers", b"/root/.ssh/", sa} <= prefixes
    assert not any(b"*" in p for p in prefixes)
    assert slots == {Cfg.WATCH_ENVIRON, Cfg.WATCH_HOME_SSH}


@pytest.mark.parametrize("entry,why", [
    ("/srv/*/key", "a `*` is understood only in"),
    ("etc/shadow", "not an absolute path"),
    ("/" + "x" * 200, "1..128 bytes"),
])
def test_bad_entries_name_themselves(entry, why):
    with pytest.raises(LoadError, match="watch_reads") as e:
        validate(ProbeConfig(watch_reads=(entry,)))
    assert why in str(e.value) or why in repr(e.value)


def test_write_watch_entries_are_absolute_prefixes_without_patterns():
    assert _watch_entries(ProbeConfig().watch_writes, "probes.watch_writes", patterns=False)[0] >= {
        b"/proc/sys/kernel/core_pattern", b"/proc/sysrq-trigger"}
    for entry, why in (("/proc/*/environ", "a `*` is understood nowhere here"), ("proc/sys", "not an absolute")):
        with pytest.raises(LoadError, match="probes.watch_writes") as e:
            validate(ProbeConfig(watch_writes=(entry,)))
        assert why in str(e.value) and "\n" not in str(e.value)
