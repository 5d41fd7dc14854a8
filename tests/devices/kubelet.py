"""A real kubelet pod-resources server for tests: the v1 PodResourcesLister (proto/k8s/podresources/v1) on a
unix socket, answering List with the pods a test sets. Not a mock of our code: agent/devices/podresources.py
talks gRPC to it exactly as to the kubelet."""

from __future__ import annotations

from concurrent import futures

import grpc

from agent.devices.podresources import pb


class FakeKubelet:
    """`pods`: [(namespace, pod name, {container: [(resource name, [device ids])]})]; `fail`: List answers
    UNAVAILABLE; `calls`: how many List calls came."""

    def __init__(self, sock: str):
        api, grpc_api = pb(), pb("api_pb2_grpc")
        self.sock = sock
        self.pods: list = []
        self.fail = False
        self.calls = 0
        outer = self

        class Servicer(grpc_api.PodResourcesListerServicer):
            def List(self, request, context):
                outer.calls += 1
                if outer.fail:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "kubelet is restarting")
                return api.ListPodResourcesResponse(pod_resources=[
                    api.PodResources(namespace=ns, name=name, containers=[
                        api.ContainerResources(name=cname, devices=[
                            api.ContainerDevices(resource_name=r, device_ids=ids) for r, ids in devs])
                        for cname, devs in containers.items()])
                    for ns, name, containers in list(outer.pods)])

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        grpc_api.add_PodResourcesListerServicer_to_server(Servicer(), self.server)
        self.server.add_insecure_port(f"unix:{sock}")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0)
