"""gRPC client for the subset of containerd's API NodeWarden calls (proto/containerd/).

The namespace of each call goes in the `containerd-namespace` gRPC metadata, as ctr does. Every call
raises grpc.RpcError on failure, except the getters, which return None for NOT_FOUND. The image gate
(content.Info/Read) and the post-start enforcer (tasks.Kill/Delete) use this client too.
"""

from __future__ import annotations

import functools

import grpc
import orjson

from agent import genproto

DEFAULT_SOCKET = "/run/containerd/containerd.sock"
NAMESPACE_METADATA = "containerd-namespace"
# Only the topics we act on: an image pull alone publishes hundreds of /snapshot and /content events.
EVENT_FILTERS = ('topic~="^/tasks/"', 'topic~="^/containers/"', 'topic~="^/images/"')
_MAX_SPEC_BYTES = 8 << 20  # an OCI spec is ~10 KB; refuse to parse something absurd
_MAX_NAMESPACES = 1024


@functools.cache
def pb_module(module: str):
    """A generated module under agent.gen.containerd (made from proto/containerd on first use)."""
    return genproto.load(f"containerd.{module}")


class ContainerdUnavailable(RuntimeError):
    """containerd could not be reached or answered with an error."""


def ts_ns(ts) -> int:
    """google.protobuf.Timestamp -> ns since the epoch (0 for an unset one)."""
    try:
        return max(0, int(ts.seconds) * 1_000_000_000 + int(ts.nanos))
    except (AttributeError, TypeError, ValueError):
        return 0


def spec_cgroups_path(spec_any) -> str:
    """linux.cgroupsPath of a container's OCI spec (a google.protobuf.Any holding JSON); "" if none."""
    value = getattr(spec_any, "value", b"")
    if not value or len(value) > _MAX_SPEC_BYTES:
        return ""
    try:
        path = orjson.loads(value).get("linux", {}).get("cgroupsPath", "")
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return ""
    return path if isinstance(path, str) else ""


class ContainerdClient:
    """The calls NodeWarden makes to containerd; each raises grpc.RpcError on failure."""

    def __init__(self, socket: str = DEFAULT_SOCKET, timeout: float = 5.0):
        self.socket = socket
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            f"unix:{socket}",
            options=[
                # A container list carries every OCI spec (~10 KB each): allow big answers.
                ("grpc.max_receive_message_length", 64 << 20),
                # containerd is local: retry its socket quickly rather than after gRPC's 1..120 s backoff.
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ],
        )
        self.pb = {
            name: pb_module(mod)
            for name, mod in {
                "containers": "services.containers.v1.containers_pb2",
                "tasks": "services.tasks.v1.tasks_pb2",
                "images": "services.images.v1.images_pb2",
                "content": "services.content.v1.content_pb2",
                "events": "services.events.v1.events_pb2",
                "namespaces": "services.namespaces.v1.namespace_pb2",
            }.items()
        }
        stub = {
            name: getattr(pb_module(mod), f"{svc}Stub")(self._channel)
            for name, (mod, svc) in {
                "containers": ("services.containers.v1.containers_pb2_grpc", "Containers"),
                "tasks": ("services.tasks.v1.tasks_pb2_grpc", "Tasks"),
                "images": ("services.images.v1.images_pb2_grpc", "Images"),
                "content": ("services.content.v1.content_pb2_grpc", "Content"),
                "events": ("services.events.v1.events_pb2_grpc", "Events"),
                "namespaces": ("services.namespaces.v1.namespace_pb2_grpc", "Namespaces"),
                "version": ("services.version.v1.version_pb2_grpc", "Version"),
            }.items()
        }
        self._stub = stub

    @staticmethod
    def _md(namespace: str) -> tuple[tuple[str, str], ...]:
        return ((NAMESPACE_METADATA, namespace),)

    def close(self) -> None:
        self._channel.close()

    def version(self) -> str:
        from google.protobuf import empty_pb2

        return self._stub["version"].Version(empty_pb2.Empty(), timeout=self.timeout).version

    def namespaces(self) -> list[str]:
        req = self.pb["namespaces"].ListNamespacesRequest()
        resp = self._stub["namespaces"].List(req, timeout=self.timeout)
        return [n.name for n in resp.namespaces][:_MAX_NAMESPACES]

    def containers(self, namespace: str, filters: tuple[str, ...] = ()) -> list:
        req = self.pb["containers"].ListContainersRequest(filters=list(filters))
        return list(
            self._stub["containers"].List(req, timeout=self.timeout, metadata=self._md(namespace)).containers
        )

    def container(self, namespace: str, container_id: str):
        """The container record, or None when containerd has no such container."""
        req = self.pb["containers"].GetContainerRequest(id=container_id)
        try:
            return (
                self._stub["containers"]
                .Get(req, timeout=self.timeout, metadata=self._md(namespace))
                .container
            )
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def tasks(self, namespace: str) -> list:
        req = self.pb["tasks"].ListTasksRequest()
        return list(self._stub["tasks"].List(req, timeout=self.timeout, metadata=self._md(namespace)).tasks)

    def task(self, namespace: str, container_id: str, exec_id: str = ""):
        req = self.pb["tasks"].GetRequest(container_id=container_id, exec_id=exec_id)
        try:
            return self._stub["tasks"].Get(req, timeout=self.timeout, metadata=self._md(namespace)).process
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def kill(
        self, namespace: str, container_id: str, signal: int = 9, all: bool = False, exec_id: str = ""
    ) -> None:
        req = self.pb["tasks"].KillRequest(container_id=container_id, exec_id=exec_id, signal=signal, all=all)
        self._stub["tasks"].Kill(req, timeout=self.timeout, metadata=self._md(namespace))

    def delete_task(self, namespace: str, container_id: str):
        req = self.pb["tasks"].DeleteTaskRequest(container_id=container_id)
        return self._stub["tasks"].Delete(req, timeout=self.timeout, metadata=self._md(namespace))

    def images(self, namespace: str) -> list:
        req = self.pb["images"].ListImagesRequest()
        return list(self._stub["images"].List(req, timeout=self.timeout, metadata=self._md(namespace)).images)

    def image(self, namespace: str, name: str):
        req = self.pb["images"].GetImageRequest(name=name)
        try:
            return self._stub["images"].Get(req, timeout=self.timeout, metadata=self._md(namespace)).image
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def content_info(self, namespace: str, digest: str):
        req = self.pb["content"].InfoRequest(digest=digest)
        return self._stub["content"].Info(req, timeout=self.timeout, metadata=self._md(namespace)).info

    def read_content(
        self, namespace: str, digest: str, offset: int = 0, size: int = 0, timeout: float = 60.0
    ):
        """Yields the blob's bytes in the chunks containerd sends (size 0: to the end)."""
        req = self.pb["content"].ReadContentRequest(digest=digest, offset=offset, size=size)
        for chunk in self._stub["content"].Read(req, timeout=timeout, metadata=self._md(namespace)):
            yield chunk.data

    def subscribe(self, filters: tuple[str, ...] = EVENT_FILTERS):
        """The event stream of every namespace: an iterator of Envelopes with .cancel()."""
        req = self.pb["events"].SubscribeRequest(filters=list(filters))
        return self._stub["events"].Subscribe(req)
