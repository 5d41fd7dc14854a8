"""Settings of the image gate. The dataclass lives in agent/config.py with every other section
(the Config tree sits below the stages, issue 9); this name stays for the gate's own modules.
"""

from __future__ import annotations

from agent.config import ImageGateConfig

__all__ = ["ImageGateConfig"]
