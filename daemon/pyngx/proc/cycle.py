"""One generation of the daemon: everything a configuration owns, as one value.

A `Cycle` holds the frozen Config, the listening sockets, the zones, the
init namespace, whether the agent is wanted, whom workers run as and where
the pid file and the error log are. The master keeps one reference to the
live one: a reload builds the next beside it, commit and rollback each make
one of them current again (`pyngx.proc.master.Master.adopt`), so no field can
be left behind on the other side.

`build(config, old)` is nginx's ``ngx_init_cycle`` in pieces: shared dict
zones first (init_by_python may use them, as OpenResty allows), then
init_by_python in a fresh namespace with the user's modules purged (so a
reload imports their code as it is now on disk), then the listening sockets,
reusing the old generation's socket for an unchanged address and its zone
for an unchanged name and size. A ``reuseport`` listen gets one socket per
worker (SO_REUSEPORT on the same address; worker N keeps only socket N, see
`Cycle.for_worker`), reused by index across a reload. A failed build changes nothing: what it
created is closed, the old generation and the process record (`core.RT`) are as they were.

Knows nothing of fork or signals; `pyngx.proc.master` forks from a Cycle.
"""
from __future__ import annotations

import gc
import os
import socket
import sys
import traceback
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pyngx import log
from pyngx.conf.model import Config, Listen, ShdictSpec
from pyngx.runtime import core, phase, state, usercode
from pyngx.shm import shdict
from pyngx.shm.shdict import Zone

if TYPE_CHECKING:
    from pyngx.proc.spawn import Credentials

BACKLOG = 511  # nginx's default listen backlog on Linux


class CycleError(Exception):
    """A generation could not be built; ``str()`` is nginx-style ``MSG[ in FILE:LINE]``."""

    def __init__(self, message: str, file: str = "", line: int = 0, detail: str = "") -> None:
        self.message, self.file, self.line, self.detail = message, file, line, detail
        super().__init__(f"{message} in {file}:{line}" if file else message)


@dataclass(frozen=True, slots=True)
class Cycle:
    config: Config
    generation: int = 0
    sockets: dict[tuple[str, int], socket.socket] = field(default_factory=dict)
    # reuseport addresses: one socket per worker (index = worker id); sockets[key] is [0]
    per_worker: dict[tuple[str, int], list[socket.socket]] = field(default_factory=dict)
    zones: dict[str, Zone] = field(default_factory=dict)
    globals: dict[str, Any] = field(default_factory=dict)
    events: Any = None  # the event handlers init_by_python registered (`eventbus.Registry`)
    want_agent: bool = False
    creds: Credentials | None = None  # whom its workers run as (``user``, when the master is root)
    # the config files and the modules init_by_python imported, as this generation read them
    sources: dict[str, list[str]] = field(default_factory=dict)

    @property
    def pid_path(self) -> str:
        """Where this generation's pid file (and the reload verdict beside it) lives."""
        return pid_path(self.config)

    def all_sockets(self) -> list[socket.socket]:
        """Every listening socket of this cycle, each once (the per-worker ones included)."""
        return _each_once(self.sockets, self.per_worker)

    def close_sockets(self, keep: Cycle | None = None) -> None:
        """Close this cycle's sockets that KEEP does not share."""
        shared = {id(s) for s in keep.all_sockets()} if keep is not None else set()
        for sock in self.all_sockets():
            if id(sock) not in shared:
                sock.close()

    def kept_by(self, worker_id: int | None) -> Cycle:
        """This cycle as worker WORKER_ID holds it after the fork: only its own sockets."""
        return replace(self, sockets=self.for_worker(worker_id), per_worker={})

    def for_worker(self, worker_id: int | None) -> dict[tuple[str, int], socket.socket]:
        """The sockets worker WORKER_ID accepts on: the shared ones and its own reuseport one.

        None (the privileged agent) gets nothing.
        """
        if worker_id is None:
            return {}
        out = dict(self.sockets)
        for key, group in self.per_worker.items():
            out[key] = group[worker_id % len(group)]
        return out

    def release_zones(self, keep: Cycle | None = None) -> None:
        """Drop this cycle's zones that KEEP does not share (children keep their maps)."""
        shared = {id(z) for z in keep.zones.values()} if keep is not None else set()
        for zone in self.zones.values():
            if id(zone) not in shared:
                try:
                    zone.close()
                except Exception as exc:  # noqa: BLE001 - a zone that will not close is only logged
                    log.exception("closing shared dict zone failed", exc, log.WARN)


def pid_path(config: Config) -> str:
    """CONFIG's ``pid`` file, by default PREFIX/logs/pyngx.pid."""
    return config.pid or os.path.join(config.prefix, "logs", "pyngx.pid")


def build(config: Config, old: Cycle | None = None, *, generation: int = 1, bind: bool = True,
          inherited: dict[tuple[str, int], socket.socket] | None = None,
          creds: Credentials | None = None) -> Cycle:
    """Build a new generation beside OLD, its workers running as CREDS; on failure nothing changes.

    Raises CycleError (init_by_python failure, bind() failure, zone failure).
    """
    # A module edited within the same second as its .pyc (same size too) would be
    # hidden by that .pyc after a reload; the daemon never writes bytecode.
    sys.dont_write_bytecode = True
    saved = core.RT
    modules = dict(sys.modules)
    zones: dict[str, Zone] = {}
    try:
        zones = make_zones(config, old)
        record = _run_init(config, generation, zones, purge=old is not None)
        sources = _sources(config)
        # the last step: open_sockets closes what it bound itself when it fails
        sockets, per_worker = open_sockets(config, old, inherited or {}) if bind else ({}, {})
    except BaseException:
        Cycle(config, generation, zones=zones).release_zones(old)
        core.install(saved)
        _restore_modules(modules)
        raise
    return Cycle(config, generation, sockets, per_worker, zones, record.globals, record.events, record.want_agent,
                 creds, sources)


def check(config: Config) -> None:
    """``pyngx -t``: zones and init_by_python, as nginx -t runs init_by_lua; no sockets.

    Raises CycleError (printable as ``pyngx: [emerg] MSG``).
    """
    core.install(core.Process(state.MASTER, master_pid=os.getpid(), prefix=config.prefix,
                              worker_count=config.worker_processes))
    cycle = build(config, None, bind=False)
    cycle.release_zones()


# -- zones --

def make_zones(config: Config, old: Cycle | None) -> dict[str, Zone]:
    """Zones for CONFIG: same name and size kept, size change rebuilt, new ones created."""
    specs = config.http.shdicts if config.http is not None else ()
    zones: dict[str, Zone] = {}
    try:
        for spec in specs:
            zones[spec.name] = _zone_for(spec, old.zones.get(spec.name) if old else None)
    except BaseException:
        for name, zone in zones.items():
            if old is None or old.zones.get(name) is not zone:
                zone.close()
        raise
    return zones


def _zone_for(spec: ShdictSpec, old: Zone | None) -> Zone:
    if old is not None and old.capacity() == spec.size:
        return old
    try:
        zone = shdict.create(spec.name, spec.size)
    except Exception as exc:
        raise CycleError(f'cannot create shared dict "{spec.name}": {exc}', spec.file, spec.line) from None
    if old is not None:
        _rebuild(zone, old)
    elif spec.persist:
        load_persisted(zone, spec)
    return zone


def _rebuild(zone: Zone, old: Zone) -> None:
    """Copy OLD's items into ZONE (most recently used first, as many as fit)."""
    try:
        zone.rebuild(old)
    except Exception as exc:  # noqa: BLE001 - losing cached items must not refuse a reload
        log.exception("rebuilding shared dict zone failed, starting empty", exc, log.WARN)


def load_persisted(zone: Zone, spec: ShdictSpec) -> None:
    """Load SPEC.persist into ZONE; a missing file is normal, a bad one is logged and ignored."""
    if not spec.persist or not os.path.exists(spec.persist):
        return
    try:
        zone.load(spec.persist)
    except Exception as exc:  # noqa: BLE001 - never fatal: a bad persist file is only logged
        log.warn(f'ignoring shared dict "{spec.name}" persist file "{spec.persist}": {exc}')
        try:
            zone.flush_all()
        except Exception:  # noqa: BLE001
            pass


def save_persisted(cycle: Cycle) -> None:
    """Save every zone declared with persist=PATH (graceful stop; no child writes any more)."""
    specs = cycle.config.http.shdicts if cycle.config.http is not None else ()
    for spec in specs:
        zone = cycle.zones.get(spec.name)
        if spec.persist and zone is not None:
            try:
                zone.save(spec.persist)
            except Exception as exc:  # noqa: BLE001
                log.error(f'saving shared dict "{spec.name}" to "{spec.persist}" failed: {exc}')


# -- init_by_python --

def _run_init(config: Config, generation: int, zones: dict[str, Zone], *, purge: bool) -> core.Process:
    """Run init_by_python in a fresh namespace; returns the record it ran with (its namespace,
    its event handlers, whether it asked for the agent)."""
    http = config.http
    python_path = http.python_path if http is not None else ()
    usercode.install_path(python_path)
    if purge:
        gone = usercode.purge_modules(usercode.user_dirs(python_path, config.prefix))
        if gone:
            log.info(f"reload: dropped user modules {', '.join(sorted(gone))}")
    namespace = usercode.new_globals()
    # init_by_python sees the new generation (ngx.config, ngx.shared, process.type())
    # through a record of its own; a failed build puts the previous one back
    live = core.RT
    record = core.Process(live.kind, worker_count=config.worker_processes, master_pid=live.master_pid,
                          prefix=live.prefix, config=config, generation=generation, shdicts=zones,
                          globals=namespace, exec_mode=live.exec_mode)
    core.install(record)
    if http is None or http.init is None:
        return record
    chunk = http.init
    try:
        usercode.run_module(chunk, namespace, phase.INIT)
    except Exception as exc:
        file, line = _user_location(exc, chunk.file, chunk.line)
        detail = usercode.format_exception(exc)
        raise CycleError(f"init_by_python error: {type(exc).__name__}: {exc}", file, line, detail) from None
    return record


def _sources(config: Config) -> dict[str, list[str]]:
    """The config files and the user modules init_by_python imported, as they are now."""
    python_path = config.http.python_path if config.http is not None else ()
    dirs = usercode.user_dirs(python_path, config.prefix)
    return usercode.read_sources([*config.files, *usercode.module_files(dirs)])


def _user_location(exc: BaseException, file: str, line: int) -> tuple[str, int]:
    """The innermost traceback frame in the config file, else the chunk's start."""
    found = (file, line)
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == file:
            found = (file, lineno)
    return found


def _restore_modules(before: dict[str, Any]) -> None:
    """Put sys.modules back as it was (a refused reload keeps the old code loaded)."""
    for name in [n for n in sys.modules if n not in before]:
        del sys.modules[name]
    sys.modules.update(before)


# -- listening sockets --

def listen_addresses(config: Config) -> list[Listen]:
    """Every distinct listen address of the config, first occurrence kept."""
    seen: dict[tuple[str, int], Listen] = {}
    servers = config.http.servers if config.http is not None else ()
    for server in servers:
        for listen in server.listens:
            seen.setdefault(listen.key, listen)
    return list(seen.values())


Sockets = dict[tuple[str, int], socket.socket]


def open_sockets(config: Config, old: Cycle | None, inherited: Sockets
                 ) -> tuple[Sockets, dict[tuple[str, int], list[socket.socket]]]:
    """Listening sockets: reuse OLD's or INHERITED (systemd) for the same address, bind the rest.

    A reuseport address gets one socket per worker (one with ``master_process off``):
    OLD's are reused by index, the first may be a plain socket of OLD or INHERITED
    turned reuseport (as nginx does), the missing ones are bound.
    Returns (sockets, per_worker) for `Cycle`.
    Raises CycleError with nginx's ``bind() to ADDR:PORT failed (98: ...)``.
    """
    out: Sockets = {}
    per_worker: dict[tuple[str, int], list[socket.socket]] = {}
    count = config.worker_processes if config.master_process else 1
    old_sockets = old.sockets if old else {}
    try:
        for listen in listen_addresses(config):
            sock = _reuse(listen, old_sockets) or _reuse(listen, inherited)
            if listen.reuseport:
                group = per_worker[listen.key] = _reuse_group(listen, old, sock, count)
                while len(group) < count:
                    group.append(bind(listen))
                sock = group[0]
            out[listen.key] = sock if sock is not None else bind(listen)
    except BaseException:
        reused = {id(s) for s in (old.all_sockets() if old else ())} | {id(s) for s in inherited.values()}
        for sock in _each_once(out, per_worker):
            if id(sock) not in reused:
                sock.close()
        raise
    return out, per_worker


def _each_once(sockets: Sockets, per_worker: dict[tuple[str, int], list[socket.socket]]) -> list[socket.socket]:
    """The sockets of SOCKETS and of every PER_WORKER group, each once."""
    out = {id(s): s for s in sockets.values()}
    for group in per_worker.values():
        out.update((id(s), s) for s in group)
    return list(out.values())


def _reuse_group(listen: Listen, old: Cycle | None, first: socket.socket | None,
                 count: int) -> list[socket.socket]:
    """The start of LISTEN's per-worker group: OLD's first COUNT, else FIRST made reuseport, else empty."""
    if first is None:
        return []
    for group in (old.per_worker.values() if old is not None else ()):
        if group[0] is first:
            return group[:count]  # a smaller count leaves the rest to close with OLD
    try:
        first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError as exc:
        raise CycleError(f"setsockopt(SO_REUSEPORT) {listen.addr}:{listen.port} failed "
                         f"({exc.errno}: {exc.strerror})", listen.file, listen.line) from None
    return [first]


def _reuse(listen: Listen, sockets: dict[tuple[str, int], socket.socket]) -> socket.socket | None:
    if listen.key in sockets:
        return sockets[listen.key]
    if listen.addr in ("0.0.0.0", "*", ""):
        return sockets.get(("0.0.0.0", listen.port)) or sockets.get(("::", listen.port))
    return None


def bind(listen: Listen) -> socket.socket:
    """A non-blocking listening socket for LISTEN (SO_REUSEADDR, SO_REUSEPORT when asked)."""
    addr = "0.0.0.0" if listen.addr in ("*", "") else listen.addr.strip("[]")
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    where = f"[{addr}]:{listen.port}" if family == socket.AF_INET6 else f"{addr}:{listen.port}"
    try:
        if family == socket.AF_INET and not _is_ipv4(addr):
            info = socket.getaddrinfo(addr, listen.port, socket.AF_UNSPEC, socket.SOCK_STREAM)[0]
            family, addr = info[0], info[4][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise CycleError(f"socket() {where} failed ({exc.errno}: {exc.strerror})", listen.file, listen.line) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if listen.reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((addr, listen.port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise CycleError(f"bind() to {where} failed ({exc.errno}: {exc.strerror})") from None
    return sock


def _is_ipv4(addr: str) -> bool:
    try:
        socket.inet_aton(addr)
    except OSError:
        return False
    return addr.count(".") == 3


def freeze(*, collect: bool) -> None:
    """Move what exists now out of the collector's reach before forking (copy-on-write).

    With COLLECT, first unfreeze and collect, so the garbage of generations that
    are gone does not stay frozen for ever. A full collection takes tens of
    milliseconds, so a reload freezes without it before forking and the master
    collects once the old generation has left (`pyngx.proc.master`).
    """
    if collect:
        gc.unfreeze()
        gc.collect()
    gc.freeze()
