"""Wake the moment a file lands in a folder tree (Linux inotify through libc; no package), so a test that must
act inside a few-millisecond window (kill a writer between two of its files) reacts to the write itself
instead of polling the disk every 2 ms.

Folders created under the root are watched as they appear (hive partitions are made on the fly); the caller
re-reads the disk after each wake, so an event missed in a just-created folder costs one wake, not the test.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
from pathlib import Path

IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE, IN_ISDIR = 0x08, 0x80, 0x100, 0x40000000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
HEADER = struct.Struct("iIII")  # wd, mask, cookie, len of the name that follows

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class Watch:
    """A recursive watch on `root` (created when missing). `wait(timeout)` blocks until something lands."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.dirs: dict[int, Path] = {}
        self._add_tree(self.root)

    def _add_tree(self, top: Path) -> None:
        for folder, subdirs, _ in os.walk(top):
            wd = _libc.inotify_add_watch(self.fd, os.fsencode(folder), MASK)
            if wd >= 0:  # a folder that vanished meanwhile is simply not watched
                self.dirs[wd] = Path(folder)
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]

    def wait(self, timeout: float) -> list[Path]:
        """The paths that landed (files closed after writing or renamed into place, new folders), blocking up to
        `timeout` seconds for the first; [] on timeout."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        try:
            buf = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        out, i = [], 0
        while i < len(buf):
            wd, mask, _, n = HEADER.unpack_from(buf, i)
            name = buf[i + HEADER.size : i + HEADER.size + n].rstrip(b"\0").decode()
            i += HEADER.size + n
            path = self.dirs.get(wd, self.root) / name
            if mask & IN_ISDIR and mask & IN_CREATE:
                self._add_tree(path)
            out.append(path)
        return out

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
