"""Per-as_of run locks, so two scoring jobs never write the same as_of at once.

A lock is an ``fcntl.flock`` on one small file per as_of. The kernel releases a
flock when its holder's file descriptor is closed — including when the process
is killed with SIGKILL — so a crashed job never blocks the next one, and there
is no stale-lock cleanup to get wrong. Different as_of dates use different
files, so they may run at the same time.

The file is never deleted: deleting a flock file lets a third process lock a new
inode while a second still waits on the old one. Its content (pid, host, start
time) is only there to write a helpful :class:`~pes_ml.errors.RunInProgressError`.

flock is advisory and local: it protects runs on one machine (or on a
filesystem whose server honours flock). A run store shared by several machines
over NFS needs a database-backed lock instead.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pes_ml.errors import RunInProgressError, StoreError

logger = logging.getLogger(__name__)

# Locks held by this process, keyed by the lock file's real path. flock locks belong to
# an open file description, so a second open() + flock() in the same process would
# conflict with the first; holding a registry makes the lock re-entrant instead.
_HELD: dict[str, int] = {}
_HELD_GUARD = threading.Lock()


def is_held(lock_path: Path) -> bool:
    """Whether this process already holds the lock at ``lock_path``."""
    with _HELD_GUARD:
        return str(lock_path.resolve()) in _HELD


def _describe_holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "pid unknown"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {info.get('started_at', '?')}"


@contextmanager
def run_lock(lock_path: Path, what: str, timeout: float = 0.0, poll: float = 0.2) -> Iterator[Path]:
    """Hold an exclusive lock on ``lock_path`` for the duration of the block.

    Parameters
    ----------
    lock_path
        The lock file; created (with its parent folder) when missing.
    what
        What the lock protects, for messages, e.g. ``"a scoring run for as_of 2024-06-01"``.
    timeout
        Seconds to wait for a busy lock before giving up; 0 fails at once.
    poll
        Seconds between attempts while waiting.

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    RunInProgressError
        If another process holds the lock after ``timeout`` seconds.
    StoreError
        If the lock file cannot be created.

    Examples
    --------
    >>> with run_lock(Path("runs/.locks/as_of=2024-06-01.lock"), "a scoring run"):  # doctest: +SKIP
    ...     write_everything()
    """
    key = str(lock_path.resolve())
    with _HELD_GUARD:
        reentrant = key in _HELD
    if reentrant:
        yield lock_path
        return
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"Cannot create the lock file {lock_path}: {exc.strerror or exc}.") from exc
    deadline = time.monotonic() + max(timeout, 0.0)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise StoreError(f"Cannot lock {lock_path}: {exc.strerror or exc}.") from exc
                if time.monotonic() >= deadline:
                    holder = _describe_holder(lock_path)
                    raise RunInProgressError(
                        f"{what[:1].upper()}{what[1:]} is already in progress ({holder}). "
                        "Wait for it to finish and rerun; the lock frees itself when that process "
                        f"exits, even if it is killed (never delete {lock_path})."
                    ) from None
                time.sleep(poll)
    except BaseException:
        os.close(fd)
        raise
    started = datetime.now(UTC).isoformat(timespec="seconds")
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": started}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(owner).encode("utf-8"), 0)
    with _HELD_GUARD:
        _HELD[key] = fd
    logger.debug("Locked %s (%s)", lock_path, what)
    try:
        yield lock_path
    finally:
        with _HELD_GUARD:
            _HELD.pop(key, None)
        # Closing the descriptor releases the flock; the file stays (see module docstring).
        os.close(fd)
        logger.debug("Unlocked %s", lock_path)


__all__ = ["is_held", "run_lock"]
