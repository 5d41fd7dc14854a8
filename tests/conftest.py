"""Fixtures shared by every test directory. Real-container fixtures (docs/containers.md):

- `containerd`: a PrivateContainerd for the whole session (own root, state, socket, config; unique
  namespace). Tests on it use unique container ids and must not stop or restart it.
- `busybox_image`: OciImage "nodewarden.test/busybox:1", imported into `containerd`.
- `image_builder`: build_image(name, extra_files=None, **kw) -> OciImage, built in a temp dir and
  imported into `containerd` (extra_files: {path: bytes | (bytes, mode)}).
- `make_containerd`: make_containerd(start=True) -> a PrivateContainerd of the test's own, for tests
  that stop, restart or start containerd late; destroyed (tasks killed first) when the test ends.

All of them skip the test, with the reason, when not root or containerd/runc/busybox are missing.
"""

from __future__ import annotations

import pytest

from tests.harness.containerd import PrivateContainerd, missing_requirements
from tests.harness.oci import OciImage, build_image

BUSYBOX_IMAGE = "nodewarden.test/busybox:1"


def _require_containers() -> None:
    why = missing_requirements()
    if why:
        pytest.skip(f"real containers: {why}")


@pytest.fixture(scope="session")
def containerd(tmp_path_factory):
    _require_containers()
    cd = PrivateContainerd(tmp_path_factory.mktemp("containerd"))
    cd.start()
    try:
        yield cd
    finally:
        cd.destroy()


@pytest.fixture(scope="session")
def image_builder(containerd, tmp_path_factory):
    out = tmp_path_factory.mktemp("images")

    def build(name: str, extra_files=None, **kw) -> OciImage:
        safe = name.replace("/", "_").replace(":", "_")
        return containerd.import_image(build_image(out / f"{safe}.tar", name, extra_files, **kw))

    return build


@pytest.fixture(scope="session")
def busybox_image(image_builder) -> OciImage:
    return image_builder(BUSYBOX_IMAGE)


@pytest.fixture
def make_containerd(tmp_path_factory):
    _require_containers()
    made: list[PrivateContainerd] = []

    def make(start: bool = True) -> PrivateContainerd:
        cd = PrivateContainerd(tmp_path_factory.mktemp("containerd-own"))
        made.append(cd)
        return cd.start() if start else cd

    yield make
    for cd in made:
        if not cd.running and cd.root.exists():
            # Stopped by the test with tasks maybe still running: bring it back to kill them.
            try:
                cd.start()
            except RuntimeError:
                pass
        cd.destroy()
