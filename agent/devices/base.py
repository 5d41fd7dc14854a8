"""What a vendor backend gives the device poller (agent/devices/poller.py), whatever its driver.

A backend wraps one driver library (NVML, xpuml) or tool (xpu_smi). Every method may block or fail
in the driver: the poller calls them in its own worker thread, each under a time limit, so a hung
driver never stalls anything else (the device is then reported unresponsive). Methods raise
DeviceError for a failure the poller counts per device; a reading the device does not support is
simply left out of the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.events import DeviceHealthEvent, DeviceInfoEvent, DeviceRef


class DeviceError(Exception):
    """A driver call failed (one line: which call, the driver's error)."""


class NoDriver(Exception):
    """The driver library or tool is absent on this node: the backend is not used (one line at start)."""


@dataclass
class Reading:
    """One device's sample before it becomes a record: values by agent/devices/fields.py names,
    throttle reasons by name, (pid, used bytes or None, MIG uuid) per process, failed readings."""

    values: dict[str, float | int] = field(default_factory=dict)
    throttle: tuple[str, ...] = ()
    processes: tuple[tuple[int, int | None, str], ...] = ()
    errors: list[str] = field(default_factory=list)


class Backend:
    """The interface; agent/devices/nvidia.py and kunlun.py implement it."""

    vendor = ""

    def open(self) -> None:
        """Load and initialise the driver. Raises NoDriver when it is not there."""
        raise NoDriver(f"{self.vendor}: no backend")

    def close(self) -> None:
        """Shut the driver down (best effort)."""

    def inventory(self, ts_ns: int) -> list[DeviceInfoEvent]:
        """Every device, as device.info records."""
        return []

    def sample(self, dev: DeviceRef) -> Reading:
        """One device's readings now."""
        return Reading()

    def health(self, timeout_s: float) -> list[DeviceHealthEvent]:
        """Health events that happened since the last call, waiting at most timeout_s for one (NVML's
        event set; backends without events poll device state and report changes)."""
        return []
