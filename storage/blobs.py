"""Content-addressed, write-once blob store on any fsspec location.

A blob lives at `blobs/<sha[:2]>/<sha>.png`, relative to the workdir; that relative key is what
manifests store, so a workdir can be copied between a laptop and a bucket unchanged.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
from collections import defaultdict
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from storage.fs import Location
from storage.hashing import sha256_hex

_KEY = re.compile(r"^blobs/([0-9a-f]{2})/([0-9a-f]{64})\.png$")
LIST_FROM = 100  # BlobStore.missing lists a blobs/<ab>/ folder from this many keys in it on


class BlobError(RuntimeError):
    """A blob is missing or its bytes do not hash to its address."""


def blob_key(sha256: str) -> str:
    return f"blobs/{sha256[:2]}/{sha256}.png"


def blob_keys(sha256s: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """blob_key over a whole column at once (nulls stay null)."""
    return pc.binary_join_element_wise("blobs/", pc.utf8_slice_codeunits(sha256s, 0, 2), "/", sha256s, ".png", "")


def parse_blob_key(key: str) -> str:
    """The sha256 of a blob key; refuses anything else (absolute paths, `..`, other folders)."""
    m = _KEY.match(key)
    if not m or m.group(1) != m.group(2)[:2]:
        raise BlobError(f"not a blob key: {key!r}")
    return m.group(2)


class BlobStore:
    def __init__(self, location: Location):
        self.loc = location
        self._journals: list[list[str]] = []  # keys written inside `rollback_on_error` blocks

    def path(self, key: str) -> str:
        parse_blob_key(key)
        return self.loc.join(key)

    def put(self, data: bytes) -> tuple[str, str]:
        """Store bytes; returns (key, sha256). Writing the same bytes twice is a no-op."""
        sha = sha256_hex(data)
        key = blob_key(sha)
        path = self.loc.join(key)
        if not self.loc.exists(path):
            for journal in self._journals:  # before the write: one stopped half-way leaves its folder behind
                journal.append(key)
            self.loc.write_atomic(path, data)
        return key, sha

    @contextlib.contextmanager
    def rollback_on_error(self) -> Iterator[None]:
        """Blobs this block writes (not those that were there before) are removed again when it
        raises, with the folders they emptied: a refused command leaves the workdir as it found it.
        Only for a writer holding the workdir lock (nobody else can have referenced them)."""
        journal: list[str] = []
        self._journals.append(journal)
        try:
            yield
        except BaseException:
            for key in journal:
                path = self.loc.join(key)
                with contextlib.suppress(FileNotFoundError):
                    self.loc.fs.rm_file(path)
                self.loc.prune_empty_dirs(posixpath.dirname(path), stop=self.loc.root)
            raise
        finally:
            self._journals.remove(journal)

    def get(self, key: str) -> bytes:
        """Read a blob and verify its hash on every read."""
        sha = parse_blob_key(key)
        path = self.loc.join(key)
        try:
            data = self.loc.read_bytes(path)
        except FileNotFoundError:
            raise BlobError(f"missing blob {key}") from None
        actual = sha256_hex(data)
        if actual != sha:
            raise BlobError(f"corrupt blob {key}: content hashes to {actual}")
        return data

    def exists(self, key: str) -> bool:
        return self.loc.exists(self.path(key))

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys among `keys` that have no blob, sorted. The keys of one `blobs/<ab>/` folder are
        checked with one listing of that folder when there are at least LIST_FROM of them, else
        with an existence check each (on an object store a HEAD request each, a listing one
        request per 1,000 names): a listing costs less than LIST_FROM HEADs while its folder holds
        fewer than 1,000 x LIST_FROM blobs (25.6M in the workdir), and a round of 1M candidates
        references ~14,000 keys per folder (3.6M in all)."""
        folders: dict[str, list[str]] = defaultdict(list)
        for key in set(keys):
            parse_blob_key(key)
            folders[key[6:8]].append(key)
        gone = []
        for folder, group in folders.items():
            if len(group) < LIST_FROM:
                gone += [k for k in group if not self.exists(k)]
                continue
            try:  # refresh: an object store's cached listing may predate a blob's removal
                names = {posixpath.basename(p) for p in self.loc.fs.ls(self.loc.join("blobs", folder),
                                                                          detail=False, refresh=True)}
            except FileNotFoundError:
                names = set()
            gone += [k for k in group if posixpath.basename(k) not in names]
        return sorted(gone)

    def keys(self) -> list[str]:
        """Every blob's key (not the hidden temp file of a write that was killed half-way)."""
        root = self.loc.join("blobs")
        if not self.loc.exists(root):
            return []
        return sorted(k for p in self.loc.fs.find(root) if _KEY.match(k := posixpath.relpath(p, self.loc.root)))
