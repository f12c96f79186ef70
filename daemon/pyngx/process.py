"""process.type / enable_privileged_agent / signal_graceful_exit / get_master_pid.

After lua-resty-core's ``ngx.process``.
"""
from __future__ import annotations

import os
import signal

from pyngx.runtime import core, phase

__all__ = ["type", "enable_privileged_agent", "get_master_pid", "signal_graceful_exit"]


def type() -> str:  # noqa: A001 - OpenResty's name
    """"master", "worker", "privileged agent", "single" or "signaller"."""
    return core.RT.kind


def enable_privileged_agent() -> None:
    """Ask the master to start the privileged agent; only in init_by_python."""
    phase.require(phase.INIT, api="process.enable_privileged_agent")
    core.RT.want_agent = True


def get_master_pid() -> int | None:
    """The master's pid (this process's own in single mode); None where there is none."""
    return core.RT.master_pid


def signal_graceful_exit() -> None:
    """Start this process's graceful exit, as if the master had asked for it."""
    os.kill(os.getpid(), signal.SIGQUIT)
