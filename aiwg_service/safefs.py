"""File operations under directories someone else may have shaped: project trees and /tmp.

A cloned repository decides what its tree holds, symlinks included. Every write the service makes under a
project root therefore goes through a directory fd opened without following symlinks (``O_NOFOLLOW``), names
relative to it (``dir_fd``), and temp files with random names created ``O_EXCL``: a committed link named like
our temp file, a ``.aiwg`` pointing at ``~/.ssh`` or a ``.aiwg/daemon`` pointing elsewhere is refused, never
followed. Config files are read only when they are regular files of at most ``MAX_CONFIG_BYTES``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

MAX_CONFIG_BYTES = 1 << 20
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(OSError):
    """A path that is a symlink, not the kind of file expected, or too big: refused, with the reason."""


def open_dir(name: str, *, dir_fd: int | None = None, create: bool = False, shown: str | None = None) -> int:
    """Open directory ``name`` (relative to ``dir_fd``) without following a symlink in its last component."""
    shown = shown or name
    for _ in range(2):
        try:
            return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                try:
                    st = os.lstat(name, dir_fd=dir_fd)
                except OSError:
                    raise exc from None
                what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                raise UnsafePath(errno.ELOOP, f"{shown} is {what}; refusing to write through it") from None
            raise
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


@contextlib.contextmanager
def project_subdir(root: str, *parts: str, create: bool = True) -> Iterator[int]:
    """An fd for ``root/part/...``: ``root`` is the project's real path; no part may be a symlink."""
    fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    try:
        shown = root
        for part in parts:
            shown = os.path.join(shown, part)
            fds.append(open_dir(part, dir_fd=fds[-1], create=create, shown=shown))
        yield fds[-1]
    finally:
        for fd in fds:
            os.close(fd)


def random_name(base: str) -> str:
    return f".{base}.{os.urandom(8).hex()}.tmp"


def write_new(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> bool:
    """Create ``name`` in ``dir_fd`` with ``data`` unless it exists (any kind, links included); True if made.

    Written to a random O_EXCL temp name first, then linked into place, so nobody sees it half-written and
    an existing entry always wins."""
    try:
        os.lstat(name, dir_fd=dir_fd)
        return False
    except FileNotFoundError:
        pass
    tmp = random_name(name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
    return True


def set_link(dir_fd: int, name: str, target: str) -> str:
    """Make ``name`` a symlink to ``target``: ``"same"``, ``"made"``, or ``"occupied"`` when a non-link is there."""
    try:
        current: str | None = os.readlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        current = None
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # exists and is not a symlink
            return "occupied"
        raise
    if current == target:
        return "same"
    if current is not None:
        os.unlink(name, dir_fd=dir_fd)
    os.symlink(target, name, dir_fd=dir_fd)
    return "made"


def read_limited(path: str | os.PathLike[str], limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; UnsafePath for anything else.

    ``O_NONBLOCK`` so a FIFO never hangs us; the read stops at ``limit + 1`` whatever the file claims, so
    ``/dev/zero`` or a growing file cannot exhaust memory."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(errno.EINVAL, "not a regular file")
        if st.st_size > limit:
            raise UnsafePath(errno.EFBIG, f"{st.st_size:,} bytes; the limit is {limit:,}")
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise UnsafePath(errno.EFBIG, f"more than {limit:,} bytes")
        return data
    finally:
        os.close(fd)


def is_socket(path: str | os.PathLike[str]) -> bool:
    """True only for a socket itself (lstat: a symlink to one is not)."""
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def private_dir(path: str | os.PathLike[str], *, allow_link: bool = False) -> None:
    """Create ``path`` as a 0700 directory of ours. Its last component is checked with lstat: a symlink
    (say a ``/tmp/aiwg-$UID`` planted by another user) or another user's directory is refused, never chmod-ed.

    ``allow_link``: a symlink the user made (a state directory moved to another disk) is followed, and the
    directory it leads to must still be ours."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        link_owner = st.st_uid
        if not allow_link or link_owner != os.getuid():
            raise PermissionError(f"{path} is a symlink; refusing to use it (remove it, or set XDG_RUNTIME_DIR)")
        path = os.path.realpath(path)
        st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise PermissionError(f"{path} is not a directory")
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path} is owned by uid {st.st_uid}, not by us ({os.getuid()})")
    if st.st_mode & 0o077:
        fd = os.open(path, DIR_FLAGS)
        try:
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)
