"""Settings of the image gate (the agent side; what a verdict depends on is in the policy file).

Meant to sit in the agent's Config tree as `imagegate:` (agent/config.py applies YAML, env and
flags to it like any section); the CLI builds one from its flags.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ImageGateConfig:
    enabled: bool = True
    cache_path: str = "/var/lib/nodewarden/imagegate/cache.db"  # "" = in memory only
    advisory_db: str = "/var/lib/nodewarden/advisories"  # OSV directory or zip; missing = no vuln checks
    rule_dirs: tuple[str, ...] = ()  # user YARA rule directories (*.yar, *.text.yar, *.web.yar)
    hash_lists: tuple[str, ...] = ()  # known-bad lists: "sha256  comment" lines
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
