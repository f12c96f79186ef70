"""Resource limits of the processes that serve: ``worker_rlimit_nofile``.

Applied in each worker and the agent right after the fork, before they drop root (so a
limit above the master's hard one can be granted), and in the single process before it
serves. As nginx's ``ngx_worker_process_init``: both the soft and the hard limit are set,
and a failure is logged, never fatal: the process serves with the limit it inherited.
"""
from __future__ import annotations

import errno
import os
import resource

from pyngx import log
from pyngx.conf.model import Config


def apply(config: Config) -> None:
    """Set RLIMIT_NOFILE to ``worker_rlimit_nofile`` when the config names one."""
    n = config.worker_rlimit_nofile
    if n is None:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    except OSError as exc:
        log.alert(f"setrlimit(RLIMIT_NOFILE, {n}) failed ({exc.errno}: {exc.strerror})")
    except (ValueError, OverflowError) as exc:  # CPython turns EPERM and EINVAL into ValueError
        code = errno.EPERM if "not allowed" in str(exc) else errno.EINVAL
        log.alert(f"setrlimit(RLIMIT_NOFILE, {n}) failed ({code}: {os.strerror(code)})")
