"""What runs inside a real container, as the kernel sees it (issue 10): a binary the container wrote
is in the overlay's upper layer, one from the image is not; the paths are the container's view."""

import os

import pytest

from tests.kernel.conftest import AgentProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def image(image_builder):
    return image_builder("nodewarden.test/identity:1")


def test_container_exec_identity_upper_layer_and_cwd(containerd, image):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    cid = containerd.run(image, "/bin/sleep", "120")
    agent = AgentProcess("--containerd-socket", str(containerd.socket))
    try:
        def ran(*argv):
            assert containerd.exec(cid, *argv, check=False).returncode == 0
            (ex,) = agent.wait_for(lambda r: r["event.name"] == "process.exec" and r.get("container.id") == cid
                                   and r.get("process.args") == list(argv), timeout=20)
            return ex

        from_image = ran("/bin/true", "image")
        ran("/bin/mkdir", "-p", "/opt/new")
        ran("/bin/cp", "/bin/busybox", "/opt/new/true")  # busybox runs the applet its argv[0] names
        dropped = ran("/opt/new/true", "dropped")
        # busybox's applets are symlinks to it: the kernel names the file that runs, inside the container
        assert from_image["process.executable.kernel_path"] == "/bin/busybox"
        assert "process.executable.upper_layer" not in from_image
        assert dropped["process.executable.kernel_path"] == "/opt/new/true"
        assert dropped["process.executable.upper_layer"] is True
        assert "process.executable.memfd" not in dropped and "process.executable.deleted" not in dropped
        assert dropped["process.working_directory"] == "/"
        assert dropped["process.executable.mount_id"] == from_image["process.executable.mount_id"]
    finally:
        agent.stop()
        containerd.remove(cid)
