"""The kinds of pyngx process (``process.type()``).

Who this process is, and what it owns, is `pyngx.runtime.core`'s record ``core.RT``.
"""
from __future__ import annotations

MASTER = "master"
WORKER = "worker"
AGENT = "privileged agent"
SINGLE = "single"
SIGNALLER = "signaller"
