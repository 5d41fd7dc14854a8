"""Fail-closed NRI on containerd 2.3.4: the default validator with `required_plugins = ["nodewarden"]`
(the bundle's config-failclosed.toml), the real agent as the plugin, driven through CRI with crictl.

- While the agent is away, CreateContainer fails ("required plugin ... not present").
- The window (docs/nri.md): after the plugin disconnects, containerd still lists it until a request
  to it fails with `ttrpc: closed`, which it takes for "no error", so the FIRST create after the
  disconnect passes the validator, however long after it comes. A container of a blocked image made
  in that window is killed by the post-start kill once the agent is back: the agent's first listing
  of containerd finds it running.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.harness.containerd import unique_id, wait_until
from tests.harness.containerd2 import AgentSlot, missing_requirements, running_containerd2
from tests.harness.oci import build_image
from tests.unit.imagegate_helpers import EICAR

_WHY = missing_requirements()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(_WHY is not None, reason=f"containerd 2.x CRI + NRI: {_WHY}")]

BLOCK_MALWARE = "categories:\n  malware: {alert: low, block: high}\n"
_NOT_PRESENT = re.compile(r'required plugin \\?"nodewarden\\?" not present')  # crictl's log escapes the quotes


def _refused_as_missing(error: str) -> bool:
    return bool(_NOT_PRESENT.search(error))


@pytest.fixture(scope="module")
def cd(tmp_path_factory):
    with running_containerd2(tmp_path_factory.mktemp("cd2fc"), failclosed=True) as c:
        yield c


@pytest.fixture(scope="module")
def slot(cd, tmp_path_factory):
    s = AgentSlot(cd, tmp_path_factory.mktemp("cd2fc-agents"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def images(cd, tmp_path_factory):
    out = tmp_path_factory.mktemp("cd2fc-images")
    clean = cd.import_image(build_image(out / "clean.tar", "nodewarden.test/fc-clean:1"))
    eicar = cd.import_image(build_image(out / "eicar.tar", "nodewarden.test/fc-eicar:1", {"/opt/eicar.com": EICAR}))
    return clean, eicar


@pytest.fixture
def pod(cd):
    pod_id = cd.run_pod()
    yield pod_id
    cd.remove_pod(pod_id)


def _containerd_version(cd) -> str:
    m = re.search(r"v\d+\.\d+\.\d+", cd.ctr("version").stdout.split("Server:")[-1])
    return m.group(0) if m else ""


def test_create_fails_while_the_agent_is_away(cd, slot, pod, images):
    clean, _ = images
    slot.stop()
    c = cd.create(pod, clean)
    assert not c.ok and _refused_as_missing(c.error), c.error
    slot.use(BLOCK_MALWARE)
    c = cd.create(pod, clean)
    assert c.ok, f"the agent is registered again, yet: {c.error}"


def test_the_first_create_after_a_disconnect_passes_and_the_post_start_kill_covers_it(cd, slot, pod, images):
    clean, eicar = images
    slot.use(BLOCK_MALWARE)
    since = cd.log_size()
    slot.stop()
    closed = re.compile(r'connection to plugin \\?"\d\d-nodewarden\\?" closed')
    assert wait_until(lambda: closed.search(cd.log_since(since)), timeout=10), cd.log_since(since)[-2000:]
    time.sleep(1.0)  # not a race: containerd knows the connection is gone, and the window stays open
    first = cd.create(pod, eicar)
    second = cd.create(pod, clean)
    assert _refused_as_missing(second.error), f"the second create after the disconnect: {second.error or 'created'}"
    version = _containerd_version(cd)
    assert version, cd.ctr("version").stdout
    if version == "v2.3.4":  # the fact docs/nri.md records for this version
        assert first.ok, f"containerd v2.3.4 no longer lets the first create through: {first.error}"
    if not first.ok:
        assert _refused_as_missing(first.error), first.error
        return
    cd.start_container(first.id)  # the window let a blocked image in, and it runs
    assert cd.state(first.id) == "CONTAINER_RUNNING"
    agent = slot.use(BLOCK_MALWARE)
    block = agent.wait_for(lambda r: r.get("event.name") == "enforcement.block" and r.get("container.id") == first.id,
                           timeout=60)
    assert block["enforcement.point"] == "containerd.kill" and block["enforcement.outcome"] == "killed", block
    assert wait_until(lambda: cd.state(first.id) == "CONTAINER_EXITED", timeout=20), cd.state(first.id)
    third = cd.create(pod, eicar)  # and the gate is back in front of creation
    assert not third.ok and "image verdict block: malware/" in third.error, third.error


def test_a_blocked_image_is_refused_with_the_verdict_not_the_validator(cd, slot, pod, images):
    _, eicar = images
    agent = slot.use(BLOCK_MALWARE)
    name = unique_id("eicar")
    c = cd.create(pod, eicar, name=name)
    assert not c.ok and "image verdict block: malware/" in c.error and not _refused_as_missing(c.error), c.error
    agent.wait_for(lambda r: r.get("event.name") == "enforcement.block" and r.get("container.name") == name)


def test_a_pod_with_the_tolerate_annotation_is_created_while_the_agent_is_away(cd, slot, images):
    """What lets the agent's own DaemonSet pod start on a fail-closed node (packaging/daemonset.yaml
    carries the annotation; the bundle's config-failclosed.toml names it)."""
    from tests.unit.test_packaging import TOLERATE_ANNOTATION, _one

    shipped = _one("DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert f'tolerate_missing_plugins_annotation = "{TOLERATE_ANNOTATION}"' in cd.config.read_text()
    clean, _ = images
    slot.stop()
    pod_id = cd.run_pod(annotations=shipped)
    try:
        c = cd.create(pod_id, clean)
        assert c.ok, f"annotated {shipped}, yet: {c.error}"
    finally:
        cd.remove_pod(pod_id)
