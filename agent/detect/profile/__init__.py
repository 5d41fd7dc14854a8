"""Behaviour profiles per workload (issue 13): learn what a workload's containers run, whom they connect
to, what they listen on and where they write; then alert on (monitoring) or kill (protecting) what they
never did. key.py names a workload, model.py holds a profile, store.py keeps profiles on disk and takes
control requests, engine.py watches the event stream."""

from __future__ import annotations

from agent.detect.profile.key import Workload, workload_of
from agent.detect.profile.model import KINDS, MODES, Profile

__all__ = ["KINDS", "MODES", "NullProfiles", "Profile", "Workload", "build", "workload_of"]


class NullProfiles:
    """Profiles disabled: every method a no-op, so callers need no checks."""

    enabled = False

    def observe_batch(self, events, flagged) -> list:
        return []

    def tick(self, now=None) -> list:
        return []

    def on_container(self, kind, info) -> None:
        return None

    def prepare(self, info, cgroups_path) -> None:
        return None

    def reconcile(self, infos) -> None:
        return None

    def set_policy(self, policy) -> None:
        return None

    def drops(self) -> dict[str, int]:
        return {}

    def counters(self) -> dict:
        return {}

    def profiles(self) -> list:
        return []

    def close(self) -> None:
        return None


def build(cfg, policy, kill=None, sync=None, state_dir: str = ""):
    """The engine, or NullProfiles when profiles are off. cfg: the agent's Config (its profiles section and
    agent.state_dir are used) or a ProfilesConfig; profiles live in cfg.state_dir, else
    <state_dir or agent.state_dir>/profiles."""
    if hasattr(cfg, "profiles"):
        state_dir = state_dir or cfg.agent.state_dir
        cfg = cfg.profiles
    if not cfg.enabled:
        return NullProfiles()
    import os

    from agent.detect.profile.engine import ProfileEngine
    from agent.detect.profile.store import ProfileStore

    directory = cfg.state_dir or os.path.join(state_dir or "/var/lib/nodewarden", "profiles")
    return ProfileEngine(cfg, policy, ProfileStore(directory), kill=kill, sync=sync)
