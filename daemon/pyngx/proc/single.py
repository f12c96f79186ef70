"""One process that is master and worker at once: ``master_process off`` and ``pyngx -e``.

``master_process off`` builds the cycle as the master would and runs the
child main in-process (``process.type() == "single"``, worker id 0 of 1).
``-e CODE`` runs CODE in that same setting with no config and returns once
the code and every timer it started are done, like OpenResty's ``resty -e``.
"""
from __future__ import annotations

import os

from pyngx import log
from pyngx.conf.model import Config
from pyngx.proc import boot, child, limits, pidfile, service
from pyngx.proc import cycle as cycles
from pyngx.proc.cycle import CycleError
from pyngx.runtime import core, state, tree, usercode
from pyngx.shm import shdict
from pyngx.shm.shdict import Zone

EXEC_FILENAME = "(command line -e)"


def serve(config: Config, argv: list[str], conf_path: str, prefix: str, extra: list[str]) -> int:
    """``master_process off``: build, detach if asked, serve in this process; returns the exit code."""
    # held until the loop handles them (child._wire_signals unblocks): a TERM during the start
    # must stop the process cleanly, not kill it with the default action
    service.block_child_signals()
    started = boot.start(config, state.SINGLE)
    if started is None:
        return 1
    cycle, _, pid = started
    table = tree.single_process()
    log.notice(f"pyngx single process {pid} started")
    boot.announce(config, pid)
    try:
        limits.apply(config)  # worker_rlimit_nofile
        code = child.run(cycle, state.SINGLE, 0, master_pid=pid, status_fd=-1, table=table)
    finally:
        cycles.save_persisted(cycle)
        cycle.close_sockets()
        pidfile.unlink_if_ours(boot.pid_path(config), pid)
    log.notice("exit")
    return code


def run_code(code: str, shdicts: list[tuple[str, int]], prefix: str) -> int:
    """``pyngx -e CODE [--shdict 'NAME SIZE']...``; returns 0, or 1 when the code raised."""
    from pyngx.conf.pycode import compile_chunk

    try:
        chunk = compile_chunk(code, EXEC_FILENAME, 1, "module")
    except SyntaxError as exc:
        log.stderr(f"pyngx: [emerg] {exc.msg} in {EXEC_FILENAME}:{exc.lineno}")
        return 1
    record = core.Process(state.SINGLE, worker_id=0, master_pid=os.getpid(), prefix=os.path.abspath(prefix),
                          generation=1, globals=usercode.new_globals(), exec_mode=True)
    if log.error_log.fd == 2:
        log.error_log.level = log.WARN  # resty's default --errlog-level
    try:
        record.shdicts = _exec_zones(shdicts)
    except CycleError as err:
        log.stderr(f"pyngx: [emerg] {err}")
        return 1
    core.install(record)
    return child.run(None, state.SINGLE, 0, master_pid=record.master_pid or 0, status_fd=-1,
                     table=tree.single_process(), code=chunk)


def _exec_zones(shdicts: list[tuple[str, int]]) -> dict[str, Zone]:
    zones: dict[str, Zone] = {}
    for name, size in shdicts:
        try:
            zones[name] = shdict.create(name, size)
        except Exception as exc:  # noqa: BLE001 - a bad --shdict is the user's mistake
            raise CycleError(f'cannot create shared dict "{name}": {exc}') from None
    return zones
