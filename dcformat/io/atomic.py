"""The one way dcformat replaces a file: completely or not at all.

Every writer (``.dcf`` files, shards, shard indexes, and the exporters to safetensors,
npz, torch and ONNX) writes into an :class:`AtomicFile` and commits it: the data is
synced, the file renamed over its destination, and the folder synced so that the rename
itself survives a crash. A failure or :meth:`AtomicFile.abort` leaves the destination as
it was.

Where the system allows (Linux), the temporary file has no name while it is written
(``O_TMPFILE``) and gets one only just before the rename, so a process killed while
writing leaves nothing behind; elsewhere it is ``.NAME.XXXX.tmp`` from the start. The
file gets the mode of the file it replaces, or what ``open()`` gives a new file.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from typing import BinaryIO, Self


def same_file(a, b) -> bool:
    """Whether two paths name one existing file (relative paths, symbolic and hard links
    resolved): what a writer checks so as never to replace the file it reads from."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # one of them does not exist (or is no usable path)
        return False


class AllOrNothing:
    """``with`` for the writers that replace files whole: leaving the block normally completes
    the work (``_complete``, the writer's ``commit`` or ``close``), leaving it by an exception
    drops it (``abort``), so the destination keeps its previous content."""

    def _complete(self):
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._complete()
        else:
            self.abort()


class AtomicFile(AllOrNothing):
    """``with AtomicFile(path) as out: out.file.write(...)``: ``path`` appears on success.

    ``out.file`` is a seekable binary file object open for reading and writing.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.folder = os.path.dirname(os.path.abspath(self.path))
        fd = _anonymous_file(self.folder)
        if fd is None:
            fd, self._temporary = tempfile.mkstemp(prefix=self._prefix(), suffix=".tmp", dir=self.folder)
        else:
            self._temporary = None  # named in commit()
        os.fchmod(fd, _new_file_mode(self.path))  # mkstemp makes 0600; give the file a normal mode
        self.file: BinaryIO = os.fdopen(fd, "w+b")
        self.committed = False

    def commit(self) -> None:
        """Sync the data, move the file over ``path`` and sync the folder."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            if self._temporary is None:
                self._temporary = _name_anonymous_file(self.file.fileno(), self.folder, self._prefix())
            self.file.close()
            os.replace(self._temporary, self.path)
        except BaseException:
            self.abort()
            raise
        self.committed = True
        sync_folder(self.folder)

    def abort(self) -> None:
        """Drop the temporary file; ``path`` keeps its previous content."""
        if not self.file.closed:
            self.file.close()
        if self._temporary is None or self.committed:  # never named: closing it was enough
            return
        try:
            os.unlink(self._temporary)
        except FileNotFoundError:
            pass

    _complete = commit

    def _prefix(self) -> str:
        return "." + os.path.basename(self.path) + "."


def write_bytes(data: bytes, path) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with AtomicFile(path) as out:
        out.file.write(data)


def sync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _anonymous_file(folder: str) -> int | None:
    """A read-write file without a name in ``folder`` (Linux's O_TMPFILE), or None where unsupported."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):  # naming it later needs /proc
        return None
    try:
        return os.open(folder, flag | os.O_RDWR, 0o600)
    except OSError:  # a filesystem or kernel without it (EOPNOTSUPP, EISDIR, EINVAL)
        return None


def _name_anonymous_file(fd: int, folder: str, prefix: str) -> str:
    """Give the O_TMPFILE file ``fd`` a unique temporary name in ``folder``; returns it."""
    # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N links the file itself; os.link calls linkat
    # (not link, which would link the /proc symlink) only when given a directory fd.
    proc = os.open("/proc/self/fd", os.O_RDONLY)
    try:
        for _ in range(100):
            candidate = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}.tmp")
            try:
                os.link(str(fd), candidate, src_dir_fd=proc, follow_symlinks=True)
                return candidate
            except FileExistsError:
                continue
    finally:
        os.close(proc)
    raise FileExistsError(f"no free temporary name beside {folder}")


def _new_file_mode(path: str) -> int:
    """The mode of the file being replaced, or what ``open()`` would give a new file (0666 & ~umask)."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
