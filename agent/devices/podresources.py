"""The kubelet's pod-resources API (proto/k8s/podresources/v1/api.proto): which devices the kubelet gave each
pod container on this node. A unix socket, no authentication beyond the file's mode (root, in a DaemonSet
the host path /var/lib/kubelet/pod-resources mounted read-only).

One call, List, each under a time limit; an absent socket is not an error (not a Kubernetes node, or the
kubelet not started yet): `present()` says so and the guard falls back to the OCI spec.
"""

from __future__ import annotations

import os

from agent import genproto
from agent.devices.alloc import Allocation, per_container

_MAX_ANSWER = 64 << 20  # a node with thousands of pods answers a few MB


class PodResourcesError(Exception):
    """The kubelet could not be asked or did not answer (one line)."""


def pb(module: str = "api_pb2"):
    return genproto.load(f"k8s.podresources.v1.{module}")


class PodResources:
    """list() -> {(pod namespace, pod name, container name): Allocation}; PodResourcesError on failure."""

    def __init__(self, socket: str, timeout: float = 2.0):
        self.socket = socket
        self.timeout = timeout
        self._channel = None
        self._stub = None

    def present(self) -> bool:
        return os.path.exists(self.socket)

    def _connect(self):
        if self._stub is None:
            import grpc

            self._channel = grpc.insecure_channel(f"unix:{self.socket}", options=[
                ("grpc.max_receive_message_length", _MAX_ANSWER),
                # a local socket: retry it quickly rather than after gRPC's 1..120 s backoff
                ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 2000)])
            self._stub = pb("api_pb2_grpc").PodResourcesListerStub(self._channel)
        return self._stub

    def list(self) -> dict[tuple[str, str, str], Allocation]:
        import grpc

        try:
            resp = self._connect().List(pb().ListPodResourcesRequest(), timeout=self.timeout)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            detail = e.details() if hasattr(e, "details") else str(e)
            raise PodResourcesError(f"kubelet pod-resources List at {self.socket}: "
                                    f"{getattr(code, 'name', code)}: {' '.join(str(detail).split())[:200]}") from None
        return per_container(resp.pod_resources)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = self._stub = None
