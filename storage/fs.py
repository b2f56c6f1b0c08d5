"""fsspec plumbing: one URI type for local paths, file://, memory:// and s3://, and atomic writes."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import posixpath
import re
import stat
import uuid
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem


TEMP_PREFIX = ".tmp-"  # write_atomic's temp files: `.tmp-<32 hex>-<final name>`, next to the final file
_TEMP_NAME = re.compile(r"^\.tmp-[0-9a-f]{32}-")


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of write_atomic's temp files (a crash can leave them behind)."""
    return bool(_TEMP_NAME.match(name))


def read_regular_file(path: str | os.PathLike[str], limit: int, error: type[Exception] = ValueError,
                      name: str | None = None) -> bytes:
    """The bytes of a local regular file of at most `limit` bytes, else `error` naming it (as `name`,
    by default its path). Opened non-blocking and checked on the open file: a FIFO or a device named
    like an input would block the read forever (or never end), and a path swapped after a check
    would go unnoticed. OSErrors (not found, not permitted, a symlink loop) are the caller's."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{name or path}: not a regular file")
        with open(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)  # past the limit whatever its size says (a /proc file says 0)
        if len(data) > limit:
            raise error(f"{name or path}: larger than {limit} bytes")
        return data
    finally:
        os.close(fd)


class ForeignFiles(RuntimeError):
    """An output folder holding what the command that writes there does not own."""


def refuse_foreign_files(out: str | os.PathLike[str], owns: Callable[[str, bool], bool], command: str) -> None:
    """Refuse (ForeignFiles) a local output folder holding anything `command` does not write there:
    `owns(relative path, is a folder)` says what it writes (and may replace or delete). A symlink
    is never owned (writing through it would change what it points to); neither is a folder's
    content the command does not own. A missing folder passes: it will be the command's own."""
    out = os.fspath(out)
    if not os.path.lexists(out):
        return
    if os.path.islink(out) or not os.path.isdir(out):
        raise ForeignFiles(f"{out}: not a folder: name a new or empty folder for --out (nothing was changed)")
    for here, dirs, files in os.walk(out):
        for name in sorted(dirs + files):
            path = os.path.join(here, name)
            rel = os.path.relpath(path, out).replace(os.sep, "/")
            if os.path.islink(path) or not owns(rel, os.path.isdir(path)):
                raise ForeignFiles(f"{out}: holds {rel}, which `{command}` does not write: name a new or empty "
                                   "folder for --out (nothing was changed)")
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(here, d))]


def write_new_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Create a local file that must not exist yet (FileExistsError if it does: a file the caller
    did not make is never overwritten), whole or not at all: written to a temp file beside it, then
    linked to its name (a link fails where a name exists, atomically) and the temp file removed."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path) or ".", f"{TEMP_PREFIX}{uuid.uuid4().hex}-{os.path.basename(path)}")
    with open(tmp, "xb") as f:
        f.write(data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "exists, and is never overwritten", path) from None
    finally:
        os.unlink(tmp)


@dataclass(frozen=True)
class Location:
    """A filesystem plus a root path inside it. `join` builds child paths; `uri` gives them back as URIs."""

    fs: fsspec.AbstractFileSystem
    root: str

    @classmethod
    def parse(cls, uri: str | os.PathLike[str]) -> "Location":
        text = os.fspath(uri)
        if "://" not in text:
            text = os.path.abspath(os.path.expanduser(text))
        fs, root = fsspec.core.url_to_fs(text)
        return cls(fs=fs, root=root.rstrip("/") or "/")

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def uri(self, path: str) -> str:
        return self.fs.unstrip_protocol(path)

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def read_bytes(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    def write_atomic(self, path: str, data: bytes) -> None:
        """Write `data` so readers see either nothing or all of it (`writer`)."""
        with self.writer(path) as f:
            f.write(data)

    @contextlib.contextmanager
    def writer(self, path: str) -> Iterator[BinaryIO]:
        """A binary file whose bytes appear at `path` whole when the block ends, and nowhere when it
        raises.

        Locally: a dot-prefixed temp file in the same directory, then rename (atomic on POSIX;
        dot-prefixed names are ignored by pyarrow dataset discovery and by Hugging Face `datasets`),
        so the block streams to disk. Object stores: the bytes are kept in memory and sent as one
        PUT, which the service makes visible all at once.
        """
        if not self.is_local:
            buf = io.BytesIO()
            yield buf
            self.fs.pipe_file(path, buf.getvalue())
            return
        parent = posixpath.dirname(path)
        os.makedirs(parent, exist_ok=True)
        tmp = posixpath.join(parent, f"{TEMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(path)}")
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def publish_dir(self, src: str, dst: str, last: str, before_last: Callable[[], None] | None = None) -> None:
        """Move directory `src` to `dst` (which must not exist) so that file `last` appears last.

        Locally one rename publishes everything at once. Object stores have no rename: files are
        copied one by one (each copy appears whole), `last` after all the others; `before_last()`
        runs between the two (a failpoint for tests).
        """
        if self.is_local:
            os.makedirs(posixpath.dirname(dst), exist_ok=True)
            os.rename(src, dst)  # fails if dst exists and is non-empty: never overwrite a round
            return
        files = sorted(self.fs.find(src))
        final = posixpath.join(src, last)
        for f in [f for f in files if f != final]:
            self.fs.copy(f, posixpath.join(dst, posixpath.relpath(f, src)))
        if before_last is not None:
            before_last()
        self.fs.copy(final, posixpath.join(dst, last))
        self.fs.rm(src, recursive=True)

    def prune_empty_dirs(self, path: str, stop: str) -> None:
        """Remove `path` and its parents up to (not including) `stop` while they are empty folders
        (local only: object stores have no folders)."""
        if not self.is_local:
            return
        while path.startswith(stop.rstrip("/") + "/") and os.path.isdir(path):
            try:
                os.rmdir(path)
            except OSError:  # not empty
                return
            path = posixpath.dirname(path)

    def move(self, src: str, dst: str) -> None:
        """Move a file or folder to `dst` (which must not exist): a rename locally, copies then
        deletes on object stores."""
        if self.is_local:
            os.makedirs(posixpath.dirname(dst), exist_ok=True)
            os.rename(src, dst)
            return
        if self.fs.isdir(src):
            for f in sorted(self.fs.find(src)):
                self.fs.copy(f, posixpath.join(dst, posixpath.relpath(f, src)))
            self.fs.rm(src, recursive=True)
        else:
            self.fs.copy(src, dst)
            self.fs.rm_file(src)

    def remove_tree(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
