"""One Config tree, built once from defaults, a YAML file, the environment and flags, in that order.

Each stage takes its own part in its constructor; nothing reads configuration globally.
An unknown key or a value of the wrong type is an error naming the key, never ignored.
Every section's dataclass lives here, at the bottom of the layers (it imports nothing of ours),
so that the stages import their settings from it and never the reverse (issue 9). What a value
must be beyond its type (a probe family that exists, a power of two) the stage checks at start.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import types
import typing
from dataclasses import dataclass, field

import yaml

# The BPF C sources, beside the package in a checkout (the container image keeps that layout).
PROBES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "probes")


class ConfigError(Exception):
    pass


@dataclass
class OutputConfig:
    format: str = "text"  # "json": one object per line; "text": one readable line per event
    show_fork: bool = False  # fork events feed the process table; printing them is noise for most


@dataclass
class AgentConfig:
    node_name: str = field(default_factory=socket.gethostname)
    state_dir: str = "/var/lib/nodewarden"
    proctable_max: int = 32768
    ancestry_max: int = 8  # ancestors named on every record (process.ancestors.*), parent first; 0 = none
    queue_batches: int = 64  # bounded queue between the ring-buffer reader and the pipeline
    # ... and bounded in bytes: batches fill up as load rises, so a count alone let the queue hold ~100 MB of
    # records under a sustained overload (64 x 4,096 file records) before it dropped any
    queue_max_bytes: int = 16 << 20
    batch_max: int = 4096  # records the reader takes from the ring buffer at once
    batch_interval: float = 0.005  # seconds the reader lets records accumulate after a partial batch
    poll_interval: float = 0.05  # longest a quiet node's event waits in the ring buffer
    metrics_listen: str = ""  # "host:port" for /metrics, /healthz, /readyz; "" = off
    drops_interval: float = 1.0  # seconds between checks of the drop counters
    policy_file: str = ""  # the policy YAML (runtime rules: `runtime:` section); "" = no rules
    hold_s: float = 0.5  # how long an event of a just-created cgroup waits for containerd to name its container
    hold_max: int = 10000  # events waiting so at most; past it the oldest goes out as container.id=unknown
    record_file: str = ""  # append every ring-buffer batch to this file (agent/sensors/replay.py); "" = off


@dataclass
class ProbeConfig:
    """Settings of the BPF probes; agent/sensors/loader.py validates them against its registry."""

    families: tuple[str, ...] = ("process", "file", "net", "cgroup", "system")  # = agent.sensors.DEFAULT_FAMILIES
    ringbuf_pages: int = 256  # 1 MiB with 4 KiB pages
    ignore_prefixes: tuple[str, ...] = ("/proc/", "/sys/", "/dev/")
    file_readonly: bool = False
    # Seconds within which the same process opening the same path with the same flags again, or connecting to
    # the same IPv4/IPv6 peer with the same result, is folded in the kernel: counted
    # (nodewarden_drops_total{stage="kernel.file_open_folded"|"kernel.net_connect_folded"}), not sent. 0 = off.
    fold_window: float = 1.0
    # Sensitive paths whose read-only opens are reported although file_readonly is off, and although
    # under an ignored prefix (the watch list wins). Prefixes, matched in the kernel against the path as
    # given (absolute paths only); two patterns with one `*` component are understood as well:
    # /proc/*/environ and /home/*/.ssh/ (agent/sensors/loader.py WATCH_PATTERNS).
    watch_reads: tuple[str, ...] = (
        "/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/pam.d/", "/root/.ssh/", "/home/*/.ssh/",
        "/var/run/secrets/kubernetes.io/serviceaccount/", "/run/secrets/kubernetes.io/serviceaccount/",
        "/proc/*/environ", "/root/.aws/", "/root/.config/gcloud/", "/root/.azure/", "/root/.kube/config",
        "/root/.docker/config.json",
    )
    # Paths whose writing opens are sent although an ignored prefix (/proc/, /sys/) covers them: the kernel
    # knobs a container escape writes (core_pattern and modprobe run a program as root on the host, binfmt_misc
    # registers an interpreter, uevent_helper and hotplug run one on a device event, sysrq-trigger acts at once).
    watch_writes: tuple[str, ...] = (
        "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe", "/proc/sys/kernel/hotplug",
        "/proc/sys/fs/binfmt_misc/", "/proc/sysrq-trigger", "/sys/kernel/uevent_helper",
    )
    # GPU and XPU device nodes: every open of them, reading or writing, is sent although /dev/ is ignored, so
    # the device guard (agent/devices/guard.py) sees a container open a device it was not given (issue 12).
    # Kept apart from watch_reads/watch_writes so that a site's own watch lists never drop them by accident.
    watch_devices: tuple[str, ...] = ("/dev/nvidia", "/dev/xpu")
    target_tgid: int = 0  # 0 = every process
    ignore_tgids: tuple[int, ...] = field(default_factory=tuple)
    probes_dir: str = PROBES_DIR
    cache_dir: str = "/var/cache/nodewarden"


@dataclass
class ImageGateConfig:
    """Settings of the image gate (the agent side; what a verdict depends on is in the policy file)."""

    enabled: bool = True
    cache_path: str = "/var/lib/nodewarden/imagegate/cache.db"  # "" = in memory only
    advisory_db: str = "/var/lib/nodewarden/advisories"  # OSV directory or zip; missing = no vuln checks
    rule_dirs: tuple[str, ...] = ()  # user YARA rule directories (*.yar, *.text.yar, *.web.yar)
    hash_lists: tuple[str, ...] = ()  # known-bad lists: "sha256  comment" lines
    hash_db: str = "/var/lib/nodewarden/known-bad.hashdb"  # `nodewarden db import-hashes` store; missing = none
    bundled_rules: bool = True
    workers: int = 2  # concurrent image scans (each streams one layer at a time)
    queue_size: int = 256  # containers waiting for a worker; beyond it they are dropped and counted
    refresh_interval: float = 30.0  # seconds between checks for changed rules or advisory database
    max_file_scan: int = 32 << 20
    max_hash_bytes: int = 1 << 30
    max_layer_bytes: int = 16 << 30
    bomb_ratio: float = 100.0
    bomb_min_bytes: int = 1 << 30
    max_entries: int = 1_000_000
    yara_timeout: int = 5
    rpc_timeout: float = 5.0  # containerd calls other than blob reads
    blob_timeout: float = 120.0  # one blob read from containerd's content store
    host_ns_dir: str = ""  # the host's namespace files for the baseline check; "" = pid 1's, else kthreadd's
    # Image signatures (the policy's signatures: section): registries are asked for an image's cosign and Notation
    # signatures. Credentials from a docker-style config.json ("" = $DOCKER_CONFIG, ~/.docker, the kubelet's);
    # registries spoken to over plain HTTP (loopback ones always are); seconds for one image's whole check.
    registry_auth_file: str = ""
    registry_insecure: tuple[str, ...] = ()
    signature_timeout: float = 3.0


@dataclass
class ContainersConfig:
    enabled: bool = True  # watch containerd and attribute events to containers
    containerd_socket: str = "/run/containerd/containerd.sock"
    proc_root: str = "/proc"  # /host/proc in a DaemonSet
    sync_timeout: float = 2.0  # at start, wait so long for containerd's first listing before agent.ready
    reconnect_max: float = 1.0  # longest wait between attempts to reach containerd (a local socket: cheap)


@dataclass
class ExportConfig:
    collector: str = ""  # "": no export; "embedded": a collector in this process; else host:port or unix:/path
    embedded_listen: str = "127.0.0.1:7470"  # where the embedded collector serves `nodewarden events`
    embedded_db: str = ""  # SQLite file of the embedded collector; default <state_dir>/events.db
    embedded_http: str = "127.0.0.1:7480"  # the embedded collector's console (collector/console); "" = none
    spool_dir: str = ""  # default <state_dir>/spool
    spool_max_bytes: int = 256 << 20
    token_file: str = ""  # shared token sent as `authorization: Bearer <token>`
    tls: bool = False  # TLS with the system roots
    tls_ca: str = ""
    tls_cert: str = ""  # client certificate, for mutual TLS
    tls_key: str = ""
    server_name: str = ""


@dataclass
class EnforceConfig:
    nri: bool = True  # serve containerd's NRI (1.7 with NRI on, 2.x): image verdicts at CreateContainer
    nri_socket: str = "/var/run/nri/nri.sock"
    nri_index: str = "10"  # two digits: NRI calls plugins in index order
    post_start_kill: bool = True  # kill running containers whose image verdict is block
    oci_gate: bool = True  # answer nodewarden-runc (the runc wrapper) at every `runc create` (docs/ocigate.md)
    gate_socket: str = "/run/nodewarden/gate.sock"


@dataclass
class WebshellConfig:
    """The run-time web-shell check (agent/detect/webshell_watch.py): files written under a web root are
    scanned when their writer closes them. The policy's `webshell:` section (action, and web_roots, globs,
    max_file_bytes when it gives them) takes precedence over these defaults."""

    enabled: bool = True
    # Prefixes the kernel matches at the open (probes/file.bpf.c close_prefix): their writes send file.close.
    web_roots: tuple[str, ...] = (
        "/var/www/", "/srv/", "/usr/share/nginx/html/", "/usr/local/apache2/htdocs/", "/usr/local/tomcat/webapps/",
        "/var/lib/tomcat9/webapps/", "/var/lib/tomcat10/webapps/", "/opt/tomcat/webapps/",
    )
    # fnmatch globs (`*` crosses `/`) matched in user space on the writing opens the probe reports anyway;
    # such a file has no close event: it is scanned at its writer's exit or after linger_s.
    globs: tuple[str, ...] = ("*/webapps/*", "*/wwwroot/*")
    max_file_bytes: int = 2 << 20  # read at most this much of a file
    # Files waiting for the scanner; beyond it they are dropped and counted (webshell.scan). Sized for a site
    # copied in at start (the wordpress image's entrypoint copies ~3,000 files into /var/www/html): the scanner
    # reads ~700 benign PHP files/s per core, a copy writes them faster. A waiting file holds ~1 KB.
    queue_size: int = 4096
    pending_max: int = 4096  # written files remembered until their writer exits or linger_s passes
    linger_s: float = 2.0  # a written file is scanned again this long after its open (dup'ed, inherited fds)
    seen_max: int = 16384  # (dev, inode, mtime, size) of files already scanned, not scanned again


@dataclass
class DevicesConfig:
    """GPU/XPU state (agent/devices/): every driver call runs in a worker under call_timeout_s, so a hung
    driver never stalls the agent; a node without a driver logs one line and reports nothing."""

    enabled: bool = True
    backends: tuple[str, ...] = ("nvidia", "kunlun")  # agent/devices/__init__.py BACKENDS
    interval_s: float = 10.0  # between two samples of every device
    call_timeout_s: float = 5.0  # one driver call longer than this: the device is reported unresponsive
    inventory_interval_s: float = 60.0  # inventory re-read (device.info on change)
    queue_size: int = 1024  # device records waiting for the pipeline; beyond it they are dropped and counted


@dataclass
class DeviceGuardConfig:
    """Unauthorized device use (agent/devices/guard.py): a container that opens a GPU/XPU device node it was
    not allocated, or a process of a container using a device that was not allocated to it, is an alert.
    Allocation comes from the kubelet's pod-resources API when its socket is there, else from the
    container's OCI spec (linux.devices, NVIDIA_VISIBLE_DEVICES / XPU_VISIBLE_DEVICES)."""

    enabled: bool = True
    pod_resources_socket: str = "/var/lib/kubelet/pod-resources/kubelet.sock"
    refresh_s: float = 10.0  # the kubelet's allocations are listed again at most this often (and on a miss)
    rpc_timeout_s: float = 2.0  # one call to the kubelet or containerd
    queue_size: int = 1024  # device opens and samples waiting to be judged; beyond it dropped and counted
    realert_s: float = 300.0  # the same container and device alert again only after this long (repeats counted)
    # Containers never judged: fnmatch globs on "<pod namespace>/<pod name>/<container name>" or on the image
    # (the device plugin, dcgm-exporter and the GPU operator open every device by design), e.g. "gpu-operator/*".
    exempt: tuple[str, ...] = ()


@dataclass
class ResourcesConfig:
    """Per-container and host resource sampling (agent/resources/): cgroup v2 or v1 files and /proc/<pid>/net/dev
    for each running container, psutil for the host, every interval_s, as container.resources and
    host.resources records and nodewarden_container_* / nodewarden_host_* metrics."""

    enabled: bool = True
    interval_s: float = 10.0
    host: bool = True  # host.resources (psutil) beside the containers' records
    filesystems: tuple[str, ...] = ("/",)  # paths whose filesystem's space host.resources reports (/host in a pod)
    max_containers: int = 4096  # containers read per sample; beyond it they are skipped and counted (resources.cut)
    # nw.container_memory_at_limit: a container's working set at or above this share of its memory limit for
    # memory_alert_samples samples in a row raises one alert; it may alert again once a sample falls below.
    memory_alert_percent: float = 95.0  # 0 = no alert
    memory_alert_samples: int = 3


@dataclass
class ProfilesConfig:
    """The behaviour model per workload (agent/detect/profile/): what each workload's containers run, whom
    they connect to, what they listen on and where they write, learned, then enforced. The policy's
    `profiles:` section sets the learning window and the mode each workload takes after it; these are
    the node's bounds and where the profiles live."""

    enabled: bool = True
    state_dir: str = ""  # "" = <agent.state_dir>/profiles
    # Profiles held; beyond it new workloads are not profiled (counted: profile.refused). With max_items this
    # bounds the model's memory: a profile at every cap takes ~300 KiB (bench.profiles), 1,024 of them ~300 MiB;
    # a typical one ~36 KiB.
    max_profiles: int = 1024
    # Items per kind and profile (exec, edge, user, peer, listen, write); a kind over its cap stops learning
    # that kind, the profile stays in learning and says so (profile.overflow, a profile.change event).
    max_items: int = 256
    max_deviations: int = 256  # new items already alerted per profile (an item alerts once)
    flush_s: float = 5.0  # changed profiles are written to the state dir (and sent to the collector) this often
    sync: bool = True  # with a collector (export.collector): push profile changes, fetch a workload's profile
    fetch_timeout_s: float = 1.0  # at a container's create, wait so long for the collector's merged profile


@dataclass
class PostureConfig:
    """The node's posture report (agent/imagegate/posture.py): long-running containers, stale bases, several
    digests of one image, missing limits, root and privileged containers; one posture.report per interval."""

    enabled: bool = True
    interval: float = 3600.0  # seconds between reports (the first comes one interval after agent.ready)
    max_age_days: float = 30.0  # a container running longer is reported as long-running


@dataclass
class LifecycleConfig:
    """Container and image lifecycle events from containerd's event stream (agent/enrich/lifecycle.py):
    container.created/started/exited/oom/deleted/exec, image.pulled/deleted, and two alerts: a container
    OOM-killed (nw.container_oom_killed) and a restart loop (nw.container_restart_loop: restart_exits exits
    of one container name within restart_window_s). Needs containers.enabled (the containerd watcher)."""

    enabled: bool = True
    restart_exits: int = 5  # exits of one container (pod namespace, pod, container name) that make a loop
    restart_window_s: float = 600.0  # ... within this many seconds (the kubelet's back-off reaches 5 in ~3 min)
    max_tracked: int = 4096  # containers whose recent exits are remembered; beyond it the oldest is forgotten
    queue_size: int = 4096  # lifecycle records waiting for the outputs; beyond it dropped and counted
    # event.names that also raise an alert (rule nw.container_lifecycle), e.g. container.exec, image.pulled; and
    # container.killed: an exit by a signal (docs/lifecycle.md)
    alert_on: tuple[str, ...] = ()


@dataclass
class Config:
    agent: AgentConfig = field(default_factory=AgentConfig)
    containers: ContainersConfig = field(default_factory=ContainersConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    imagegate: ImageGateConfig = field(default_factory=ImageGateConfig)
    enforce: EnforceConfig = field(default_factory=EnforceConfig)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    webshell: WebshellConfig = field(default_factory=WebshellConfig)
    device_guard: DeviceGuardConfig = field(default_factory=DeviceGuardConfig)
    devices: DevicesConfig = field(default_factory=DevicesConfig)
    profiles: ProfilesConfig = field(default_factory=ProfilesConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    posture: PostureConfig = field(default_factory=PostureConfig)


def _coerce(value, typ, where: str):
    origin = typing.get_origin(typ)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (elem, *_) = typing.get_args(typ)
        return tuple(_coerce(v, elem, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        typ = next(a for a in typing.get_args(typ) if a is not type(None))
    if typ is bool:
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if typ is int:
        return _integer(value, where)
    if typ is float:
        return _number(value, where)
    if typ is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__}")
        return str(value)
    return value


def _integer(value, where: str) -> int:
    """An int from YAML or a string; 1.5 is refused, not truncated, and so is true (bool is an int)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"{where}: expected an integer, got {value!r}")


def _number(value, where: str) -> float:
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError
        number = float(value)
    except (ValueError, OverflowError):  # OverflowError: an int beyond a double
        raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(number):  # nan or inf as an interval or timeout would spin or never fire
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return number


def _apply(obj, data: dict, where: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key {path!r} (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if value is not None:  # an empty section (`probes:`) is its defaults
                _apply(current, value, path)
        else:
            setattr(obj, key, _coerce(value, hints[key], path))


def _read(path: str):
    """The file's YAML, or ConfigError in one line: whatever the file holds, nothing else escapes."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path} is not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path} is not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:  # the composer recurses once per nesting level
        raise ConfigError(f"config {path} is not valid YAML: nested too deeply") from None
    except (ValueError, OverflowError) as e:  # PyYAML's scanner calls chr() unguarded on a \U escape
        raise ConfigError(f"config {path} is not valid YAML: escape out of range ({e})") from None
    return {} if data is None else data


def load(path: str | None = None, env: dict | None = None, overrides: dict | None = None) -> Config:
    """Defaults, then the YAML file at `path`, then NODEWARDEN_<SECTION>_<KEY> variables, then overrides.

    `overrides` is {"section.key": value} from command-line flags.
    """
    cfg = Config()
    if path:
        _apply(cfg, _read(path), "")
    env = os.environ if env is None else env
    for section in dataclasses.fields(cfg):
        for f in dataclasses.fields(getattr(cfg, section.name)):
            var = f"NODEWARDEN_{section.name}_{f.name}".upper()
            if var in env:
                _apply(cfg, {section.name: {f.name: env[var]}}, "")
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        _apply(cfg, {section: {key: value}}, "")
    if cfg.output.format not in ("json", "text"):
        raise ConfigError(f"output.format must be json or text, not {cfg.output.format!r}")
    return cfg
