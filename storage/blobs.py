"""Content-addressed, write-once blob store on any fsspec location.

A blob lives at `blobs/<sha[:2]>/<sha>.png`, relative to the workdir; that relative key is what
manifests store, so a workdir can be copied between a laptop and a bucket unchanged.
"""

from __future__ import annotations

import posixpath
import re

import pyarrow as pa
import pyarrow.compute as pc

from storage.fs import Location
from storage.hashing import sha256_hex

_KEY = re.compile(r"^blobs/([0-9a-f]{2})/([0-9a-f]{64})\.png$")


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

    def path(self, key: str) -> str:
        parse_blob_key(key)
        return self.loc.join(key)

    def put(self, data: bytes) -> tuple[str, str]:
        """Store bytes; returns (key, sha256). Writing the same bytes twice is a no-op."""
        sha = sha256_hex(data)
        key = blob_key(sha)
        path = self.loc.join(key)
        if not self.loc.exists(path):
            self.loc.write_atomic(path, data)
        return key, sha

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

    def keys(self) -> list[str]:
        """Every blob's key (not the hidden temp file of a write that was killed half-way)."""
        root = self.loc.join("blobs")
        if not self.loc.exists(root):
            return []
        return sorted(k for p in self.loc.fs.find(root) if _KEY.match(k := posixpath.relpath(p, self.loc.root)))
