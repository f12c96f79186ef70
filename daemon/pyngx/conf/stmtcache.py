"""The statements of config texts parsed before, so that a start need not load the parser.

Owns the cache files: one per text parsed (a config file's, the ``-g`` text), named by
a checksum of the text and its path, in ``$XDG_CACHE_HOME/pyngx`` (default
``~/.cache/pyngx``); the oldest go when there are more than ``KEEP``. An entry holds the whole
text that was parsed, the path it was read from, the parser's fingerprint (size and
modification time of the files that define the syntax, lark's included) and the statements.
It is used only when all of these equal this parse's; otherwise the text is parsed for real
and the entry rewritten. The file's name as messages show it (relative to the current
directory) is not kept: the statements get this parse's, as the parser would give them. Importing lark is
about a tenth of a start's CPU; the statements of a small file load in microseconds.

The statements hold the config's Python, so only a directory and files that belong
to this user and that no one else may write are read, and an entry is written
privately, then renamed into place. Any failure to read or write is a miss: the
cache can make a start faster, never different. ``pyngx -t`` parses for real (and
rewrites the entries). Knows nothing of the syntax (lalr.py) nor of directives.
"""
from __future__ import annotations

import marshal
import os
import stat
import zlib
from typing import Any

from pyngx.conf.parse import Stmt

FORMAT = 2
KEEP = 64  # cache files kept; a write that finds more removes the oldest
SYNTAX = ("grammar.lark", "lalr.py", "parse.py", "pyblock.py")  # beside this file: what the statements depend on

Row = tuple[Any, ...]  # (name, args, block rows or None, code, line, code_line)


class StmtCache:
    """This user's cache directory, for one load. With READ false every text is parsed and rewritten."""

    def __init__(self, directory: str, read: bool = True) -> None:
        self.dir = directory
        self.read = read
        self.fingerprint = fingerprint()

    @classmethod
    def default(cls, read: bool = True) -> StmtCache | None:
        """The cache in ``$XDG_CACHE_HOME/pyngx`` or ``~/.cache/pyngx``; None when there is no home."""
        base = os.environ.get("XDG_CACHE_HOME", "")
        if not os.path.isabs(base):  # the XDG spec: a relative path is invalid, ignored
            base = os.path.join(os.path.expanduser("~"), ".cache")
        if not os.path.isabs(base):  # no HOME and no passwd entry: "~" stayed as it was
            return None
        return cls(os.path.join(base, "pyngx"), read)

    def get(self, text: str, file: str, path: str) -> list[Stmt] | None:
        """The statements TEXT (read from PATH, shown as FILE) parses into, or None (not cached, or changed)."""
        if not self.read or self.fingerprint is None:
            return None
        try:
            if not self._private(os.lstat(self.dir)):
                return None
            with open(self._name(text, path), "rb", opener=_no_follow) as f:
                if not self._private(os.fstat(f.fileno())):
                    return None
                data = f.read()
            form, printed, was_path, was_text, rows = marshal.loads(data)
            if (form, printed, was_path, was_text) != (FORMAT, self.fingerprint, path, text):
                return None
            return [_stmt(row, file, path) for row in rows]
        except Exception:  # noqa: BLE001 - a missing, foreign or broken entry is a miss, whatever it holds
            return None

    def put(self, text: str, file: str, path: str, stmts: list[Stmt]) -> None:
        """Remember the statements of TEXT (read from PATH, shown as FILE); failures are ignored."""
        if self.fingerprint is None:
            return
        name = self._name(text, path)
        tmp = f"{name}.{os.getpid()}.tmp"
        try:
            data = marshal.dumps((FORMAT, self.fingerprint, path, text, [_row(st, file, path) for st in stmts]))
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            if not self._private(os.lstat(self.dir)):
                return
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with open(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, name)
            self._prune()
        except (OSError, ValueError):  # ValueError: a statement made elsewhere than FILE (not cached)
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def _name(self, text: str, path: str) -> str:
        # by content: `pyngx -t -g A` then a start with `-g B` (the systemd unit) both stay cached.
        # A clash of two checksums only costs a miss: the entry holds its text and path.
        key = zlib.crc32("\0".join((path, text)).encode(errors="surrogatepass"))
        return os.path.join(self.dir, f"{key:08x}.stmts")

    @staticmethod
    def _private(st: os.stat_result) -> bool:
        """Owned by this user and writable by no one else (a symlink is neither)."""
        return not stat.S_ISLNK(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022

    def _prune(self) -> None:
        entries = sorted(os.scandir(self.dir), key=lambda e: e.stat(follow_symlinks=False).st_mtime_ns)
        for entry in entries[:max(0, len(entries) - KEEP)]:
            try:
                os.unlink(entry.path)
            except OSError:  # another start pruned it first
                pass


def fingerprint() -> tuple[int, ...] | None:
    """Size and modification time of the files that define the syntax (and lark's), or None."""
    from importlib.util import find_spec

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        spec = find_spec("lark")
        paths = [os.path.join(here, name) for name in SYNTAX] + [spec.origin if spec and spec.origin else ""]
        return tuple(n for p in paths for st in (os.stat(p),) for n in (st.st_size, st.st_mtime_ns))
    except (OSError, ValueError, ImportError):
        return None


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)


def _row(st: Stmt, file: str, path: str) -> Row:
    if st.file != file or st.path != path:
        raise ValueError("a statement of another file")
    block = None if st.block is None else tuple(_row(s, file, path) for s in st.block)
    return (st.name, st.args, block, st.code, st.line, st.code_line)


def _stmt(row: Row, file: str, path: str) -> Stmt:
    name, args, block, code, line, code_line = row
    if block is not None:
        block = tuple(_stmt(r, file, path) for r in block)
    return Stmt(name, tuple(args), block, code, file, line, path, code_line)
