"""GPU and XPU state: NVIDIA through NVML (agent/devices/nvidia.py), Kunlun through xpuml or xpu_smi
(agent/devices/kunlun.py), polled by agent/devices/poller.py into typed device records.

`build(cfg, emit, ...)` is the one way in: it returns the Poller, or NullDevices when devices are off or
no backend is configured. Backends are listed here (BACKENDS) and imported only when configured, so a
node without a driver pays for neither the import nor a thread beyond the poller's own; a backend whose
driver is absent says so in the poller's one start line and reports nothing more.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from agent.config import Config, DevicesConfig
from agent.devices.base import Backend, NoDriver

# Backend name (devices.backends) -> the module that implements it.
BACKENDS: dict[str, str] = {
    "nvidia": "agent.devices.nvidia",
    "kunlun": "agent.devices.kunlun",
}


class BuildError(ValueError):
    """devices.backends names a backend we do not have (one line)."""


class NullDevices:
    """No device reporting: what the agent holds when devices are off."""

    enabled = False

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def add_listener(self, fn) -> None:
        pass

    def wait_open(self, timeout: float) -> bool:
        return True

    def snapshot(self) -> list:
        return []

    def drops(self) -> dict[str, int]:
        return {}

    def status(self) -> dict:
        return {"backends": [], "devices": []}


class _Unavailable(Backend):
    """A backend that could not even be made: its open says why, in the poller's one start line."""

    def __init__(self, vendor: str, reason: str):
        self.vendor, self.reason = vendor, reason

    def open(self) -> None:
        raise NoDriver(self.reason)


def backend_class(name: str) -> type[Backend]:
    """The Backend subclass that the module of `name` defines (its `vendor` is `name`, else the only one)."""
    module = BACKENDS.get(name)
    if module is None:
        raise BuildError(f"devices.backends: unknown backend {name!r} (known: {', '.join(sorted(BACKENDS))})")
    mod = importlib.import_module(module)
    found = [c for c in vars(mod).values()
             if inspect.isclass(c) and issubclass(c, Backend) and c is not Backend and c.__module__ == mod.__name__]
    exact = [c for c in found if c.vendor == name]
    if exact or len(found) == 1:
        return (exact or found)[0]
    raise BuildError(f"devices: {module} defines no single Backend for {name!r}")


def make_backend(name: str, cfg: DevicesConfig) -> Backend:
    cls = backend_class(name)
    params = inspect.signature(cls).parameters
    return cls(cfg) if params and next(iter(params)) in ("cfg", "config") else cls()


def build(cfg: Config | DevicesConfig, emit: Callable[[object], None] | None = None, containers=None,
          proc_root: str | None = None, backends: list[Backend] | None = None):
    """The device poller for this configuration, or NullDevices. `emit` takes each typed record (the
    pipeline's emit); `containers` is the container table that attributes processes; `backends` replaces
    the configured ones (the bench, tests with their own driver stand-ins). Raises BuildError on an
    unknown backend name."""
    from agent.devices.poller import Poller

    dcfg = cfg.devices if isinstance(cfg, Config) else cfg
    if proc_root is None:
        proc_root = cfg.containers.proc_root if isinstance(cfg, Config) else "/proc"
    if not dcfg.enabled:
        return NullDevices()
    if backends is None:
        backends = []
        for name in dict.fromkeys(dcfg.backends):
            try:
                backends.append(make_backend(name, dcfg))
            except ImportError as e:  # a backend's Python binding is missing: like a missing driver
                backends.append(_Unavailable(name, f"cannot import its binding: {e}"))
    if not backends:
        return NullDevices()
    if dcfg.interval_s <= 0 or dcfg.call_timeout_s <= 0:
        raise BuildError("devices.interval_s and devices.call_timeout_s must be positive")
    return Poller(dcfg, backends, emit or (lambda ev: None), containers=containers, proc_root=proc_root)
