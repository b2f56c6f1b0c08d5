"""The workdir lock: one `run`/`resume` (or `fsck --repair`) at a time per workdir.

    <workdir>/locks/run.lock    {"host", "pid", "started_at", "command", "token", "pid_started"}

Acquiring creates the file only if it does not exist: locally a hard link from a fully written
temp file (atomic, and readers never see half a lock); on object stores an exclusive PUT
(`pipe_file(mode="create")`: S3's If-None-Match), then a read-back of our token. That read-back is
best effort on services that ignore conditional writes: two writers racing within one round trip
could both believe they won.

A lock is stale when its process is gone: same host and the pid no longer runs, or runs but
started at another time than the holder did (the pid was reused). A lock of another host cannot
be checked from here and is never taken over automatically. Taking over a stale lock is guarded by
a second exclusive file so that two processes finding the same stale lock cannot both win, and
the new lock is read back after it is written.
"""

from __future__ import annotations

import json
import os
import posixpath
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Callable

import psutil

from storage.fs import TEMP_PREFIX, Location
from storage.store import StoreError, now_utc

LOCK_KEY = "locks/run.lock"
GUARD_SUFFIX = ".takeover"
UNREADABLE_GRACE_S = 60.0  # a lock (or takeover guard) nobody finished writing for this long is abandoned


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started_at: str
    command: str
    token: str
    pid_started: float | None = None  # the holder process's start time (psutil), to detect pid reuse

    def describe(self) -> str:
        return f"`{self.command}` on host {self.host}, pid {self.pid}, started {self.started_at}"

    @classmethod
    def me(cls, command: str) -> "Holder":
        return cls(host=socket.gethostname(), pid=os.getpid(), started_at=now_utc().isoformat(timespec="seconds"),
                   command=command, token=uuid.uuid4().hex, pid_started=_process_start(os.getpid()))


class LockHeld(StoreError):
    """Another live process holds the workdir lock; the message names it."""

    def __init__(self, workdir: str, holder: Holder | None):
        self.holder = holder
        who = holder.describe() if holder else "a process that is still writing its lock file"
        super().__init__(f"{workdir} is locked by {who}; wait for it to finish, or if that process is gone, "
                         f"delete {workdir.rstrip('/')}/{LOCK_KEY}")


def _process_start(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def stale_reason(holder: Holder) -> str | None:
    """Why a lock's holder is certainly gone, or None when it may still run (or runs elsewhere)."""
    if holder.host != socket.gethostname():
        return None
    if holder.pid <= 0 or not psutil.pid_exists(holder.pid):
        return "its process is gone"
    started = _process_start(holder.pid)
    if started is None:
        return "its process is gone"
    if holder.pid_started is not None and abs(started - holder.pid_started) > 1.0:
        return "its pid now belongs to another process"
    return None


def is_pid(value) -> bool:
    """Whether a value read from a file can be a process id (JSON may hold "12x", 1.5, true or -1,
    and os.kill(-1, ...) means every process)."""
    return type(value) is int and 0 < value < 2**31


def _holder_of(body: dict | None) -> Holder | None:
    if body is None:
        return None
    try:
        holder = Holder(**{k: body[k] for k in ("host", "pid", "started_at", "command", "token")},
                        pid_started=body.get("pid_started"))
    except (KeyError, TypeError):
        return None
    return holder if is_pid(holder.pid) and isinstance(holder.host, str) else None


class WorkdirLock:
    """`with WorkdirLock(location, "run"):` holds the lock for the block (released on exit, also on
    errors; a killed process leaves a stale lock that the next acquire takes over). Re-entrant
    within one process: an inner acquire of a lock this process holds is a no-op."""

    def __init__(self, loc: Location, command: str, on_takeover: Callable[[Holder, str], None] | None = None):
        self.loc, self.command, self.on_takeover = loc, command, on_takeover
        self.path = loc.join(LOCK_KEY)
        self.workdir = loc.root if loc.is_local else loc.uri(loc.root)  # as the user would type it
        self.me: Holder | None = None
        self._made: str | None = None  # the topmost folder creating the lock made (removed again on release)

    # ---- primitive file operations ----------------------------------------------------------
    def _create(self, path: str, body: bytes) -> bool:
        """Create `path` holding `body` unless it exists; True when we created it."""
        if self.loc.is_local:
            parent = posixpath.dirname(path)
            top = parent
            while not os.path.exists(posixpath.dirname(top)) and posixpath.dirname(top) != top:
                top = posixpath.dirname(top)
            if not os.path.exists(parent) and self._made is None:
                self._made = top
            os.makedirs(parent, exist_ok=True)
            tmp = posixpath.join(parent, f"{TEMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(path)}")
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # fails if `path` exists; the lock appears complete
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        try:
            self.loc.fs.pipe_file(path, body, mode="create")
        except FileExistsError:
            return False
        return True

    def _read(self, path: str) -> tuple[bool, dict | None]:
        """(exists, parsed body or None when unreadable)."""
        try:
            data = self.loc.read_bytes(path)
        except FileNotFoundError:
            return False, None
        try:
            body = json.loads(data)
            return True, body if isinstance(body, dict) else None
        except ValueError:
            return True, None

    def _age(self, path: str) -> float | None:
        try:
            info = self.loc.fs.info(path)
        except FileNotFoundError:
            return None
        stamp = info.get("mtime") or info.get("created") or info.get("LastModified")
        if hasattr(stamp, "timestamp"):
            stamp = stamp.timestamp()
        return time.time() - float(stamp) if stamp is not None else None

    def _remove(self, path: str) -> None:
        try:
            self.loc.fs.rm_file(path)
        except FileNotFoundError:
            pass

    # ---- the lock ---------------------------------------------------------------------------
    def holder(self) -> Holder | None:
        """Who holds the lock now (None: nobody, or a lock file that cannot be read)."""
        return _holder_of(self._read(self.path)[1])

    def acquire(self) -> None:
        me = Holder.me(self.command)
        current = self.holder()
        if current is not None and (current.host, current.pid, current.pid_started) == (me.host, me.pid, me.pid_started):
            return  # this process holds it already (`layerboot run` calling the flow): nested, the outer one releases
        body = json.dumps(asdict(me), indent=1).encode()
        for _ in range(5):
            if self._create(self.path, body):
                if (current := self.holder()) is not None and current.token == me.token:  # re-check
                    self.me = me
                    return
                raise LockHeld(self.workdir, current)
            exists, parsed = self._read(self.path)
            if not exists:
                continue  # released in between: try again
            holder = _holder_of(parsed)
            if holder is None:  # half-written (object store without exclusive PUT) or damaged
                age = self._age(self.path)
                if age is None or age < UNREADABLE_GRACE_S:
                    raise LockHeld(self.workdir, None)
                reason = f"its lock file has been unreadable for {age:.0f} s"
            else:
                reason = stale_reason(holder)
                if reason is None:
                    raise LockHeld(self.workdir, holder)
            self._take_over(holder, parsed, reason)
        raise LockHeld(self.workdir, self.holder())

    def _take_over(self, stale: Holder | None, parsed: dict | None, reason: str) -> None:
        """Remove the stale lock we saw, unless it changed meanwhile; one process at a time."""
        guard = self.path + GUARD_SUFFIX
        if not self._create(guard, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()):
            age = self._age(guard)
            if age is not None and age > UNREADABLE_GRACE_S:  # its owner died in the middle of a take-over
                self._remove(guard)
            return
        try:
            if self._read(self.path) == (True, parsed):  # still the very lock we judged stale
                if self.on_takeover and stale is not None:
                    self.on_takeover(stale, reason)
                self._remove(self.path)
        finally:
            self._remove(guard)

    def release(self) -> None:
        if self.me is None:
            return
        current = self.holder()
        if current is not None and current.token == self.me.token:
            self._remove(self.path)
        self.me = None
        self._tidy()

    def _tidy(self) -> None:
        """Remove the folders acquiring made (locks/, and the workdir itself when the lock was the
        first thing in it) if nothing else was written there: a command that wrote nothing leaves
        nothing, not even an empty folder."""
        if self._made is not None:
            stop = posixpath.dirname(self._made)
            self.loc.prune_empty_dirs(posixpath.dirname(self.path), stop=stop)
            self._made = None

    def __enter__(self) -> "WorkdirLock":
        try:
            self.acquire()
        except BaseException:
            self._tidy()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.release()
