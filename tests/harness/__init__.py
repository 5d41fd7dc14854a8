"""Test harness shared by every test that needs real containers: a private containerd
(tests/harness/containerd.py) and OCI images built from Debian's busybox-static (tests/harness/oci.py).
The pytest fixtures that wrap them are in tests/conftest.py; docs/containers.md describes both."""
