"""A round's content digest: what its rows say, whatever their layout in memory or on disk.

The digest names the manifest (`part-<digest[:16]>.parquet`), is recorded in the commit marker and
in metrics/rounds.parquet, and `layerboot fsck` derives it again from the rows. Two definitions
exist; a marker says which one its digest follows (`content_digest_version`, absent in markers
written before it existed: 1), the two have different lengths, and a digest is only ever compared
with one derived by its own definition (a round is never accepted under the other one).

1. Rounds committed before 2026-12-06: sha256 (64 hex digits) of a plain, uncompressed Parquet
   encoding of the rows sorted by triplet_id, `created_at` left out. Independent of row order, at
   the price of a sort and a copy of every column and a second encoding: ~3x the cost of the zstd
   write of the same rows (bench/RESULTS.md).
2. Since 2026-12-06: xxh3-128 (32 hex digits, the `xxhash` package) of the rows in their committed
   order, `created_at` left out, with no sort and no encoding: each column's values are hashed
   straight from its Arrow buffers as streams that do not depend on how the rows are chunked or
   sliced, nor on what bytes sit under a null (see `_feed`). ~8 ms per 100k rows, against ~60 ms
   for a zstd write of them.

What definition 2 gives up, and where that is covered instead:
- Row order is part of the content: the same rows in another order digest differently. A commit
  of rows already committed therefore compares the rows themselves, in any order
  (`Store.commit_round`), and an `fsck` of a manifest whose rows were reordered reports it.
- xxh3 is not a cryptographic hash: it tells contents apart by accident (~2^-128 per pair) but a
  collision can be crafted. Nothing trusts the digest alone: a manifest's bytes are bound to its
  marker by sha256 (`manifest_sha256`, checked on every read), and a re-commit compares rows.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

DIGEST_VERSION = 2  # what new commits write
DIGEST_VERSION_KEY = "content_digest_version"  # in a commit marker
_HEX_LENGTH = {1: 64, 2: 32}
IGNORED = ("created_at",)  # when a row was written is not what it says


class DigestError(ValueError):
    """A digest of no known definition, or a marker whose version and digest disagree."""


def version_of(digest: object, declared: object = None) -> int:
    """The definition `digest` follows: `declared` (a marker's `content_digest_version`; None for a
    marker or a rounds.parquet row without one: told by the digest's length, 1 or 2), checked
    against the digest's form. Raises DigestError for anything else."""
    versions = [v for v, n in _HEX_LENGTH.items() if isinstance(digest, str) and len(digest) == n]
    version = versions[0] if declared is None and versions else declared
    if version not in versions or not all(c in "0123456789abcdef" for c in digest):
        expected = "definition 1 or 2" if declared is None else f"definition {declared!r}"
        raise DigestError(f"content digest {digest!r} is not a digest of {expected}")
    return version


def content_digest(table: pa.Table, version: int = DIGEST_VERSION) -> str:
    """The content digest of a round's rows by definition `version` (module docstring)."""
    body = table.drop_columns([c for c in IGNORED if c in table.column_names])
    if version == 1:
        return _digest_v1(body)
    if version != 2:
        raise DigestError(f"no content digest definition {version!r}")
    streams: dict[str, xxhash.xxh3_128] = {}  # "<column>:<type>/<kind>" -> its hash
    for field, column in zip(body.schema, body.columns):
        seen: dict[str, int] = {}
        for chunk in column.chunks or [pa.array([], field.type)]:
            _feed(chunk, f"{field.name}:{field.type}", streams, seen)
    total = xxhash.xxh3_128(b"layerboot content digest 2\x00")
    for name in sorted(streams):  # by name: the same set and order whatever the chunks
        total.update(name.encode() + b"\x00" + streams[name].digest())
    return total.hexdigest()


def _feed(a: pa.Array, path: str, streams: dict[str, xxhash.xxh3_128], seen: dict[str, int]) -> None:
    """Hash one chunk of a column into the column's streams, each continued from earlier chunks:
    `path/nulls` the positions of null values (counted from the column's first value), then by
    type the values with every null's slot read as zero or empty: fixed-width values' bytes
    (little-endian, as Arrow lays them out on every platform layerboot runs on), booleans one byte
    each, strings' lengths and their bytes, lists' and maps' lengths and their items (recursively),
    structs' fields (recursively). Every chunk feeds every stream its type has, empty or not, so
    which streams exist follows from the schema alone."""

    def update(kind: str, data) -> None:
        stream = streams.get(key := f"{path}/{kind}")
        (stream if stream is not None else streams.setdefault(key, xxhash.xxh3_128())).update(data)

    start = seen.get(path, 0)
    seen[path] = start + len(a)
    valid = np.asarray(a.is_valid()) if a.null_count else None
    update("nulls", b"" if valid is None else (np.flatnonzero(~valid) + start).astype("<i8").tobytes())
    t = a.type
    if pa.types.is_boolean(t):
        update("values", pc.fill_null(a, False).to_numpy(zero_copy_only=False).astype(np.uint8).tobytes())
    elif (text := pa.types.is_string(t) or pa.types.is_large_string(t)) or pa.types.is_binary(t) or \
            pa.types.is_large_binary(t):
        if valid is not None:
            a = pc.fill_null(a, pa.scalar("" if text else b"", t))
        width = np.int64 if pa.types.is_large_string(t) or pa.types.is_large_binary(t) else np.int32
        offsets = np.frombuffer(a.buffers()[1], dtype=width)[a.offset:a.offset + len(a) + 1] if len(a) \
            else np.zeros(1, width)
        update("lengths", np.diff(offsets).astype("<i8").tobytes())
        data = a.buffers()[2] if len(a) else None
        update("bytes", b"" if data is None else memoryview(data)[offsets[0]:offsets[-1]])
    elif pa.types.is_list(t) or pa.types.is_map(t):
        offsets = a.offsets.to_numpy() if len(a) else np.zeros(1, np.int32)
        lengths = np.diff(offsets)
        items = a.values.slice(offsets[0], offsets[-1] - offsets[0])
        if valid is not None and lengths[~valid].any():  # a null backed by items: they are not content
            items = items.filter(pa.array(np.repeat(valid, lengths)))
            lengths = np.where(valid, lengths, 0)
        update("lengths", lengths.astype("<i8").tobytes())
        _feed(items, f"{path}[]", streams, seen)
    elif pa.types.is_struct(t):
        for field, child in zip(t, a.flatten()):  # flatten applies the struct's offset and nulls
            _feed(child, f"{path}.{field.name}", streams, seen)
    elif pa.types.is_primitive(t) and t.bit_width % 8 == 0:  # ints, floats, timestamps, dates, durations
        width = t.bit_width // 8
        raw = a.buffers()[1] if len(a) else None
        values = np.zeros(0, np.uint8) if raw is None else \
            np.frombuffer(raw, dtype=np.uint8)[a.offset * width:(a.offset + len(a)) * width]
        if valid is not None:
            values = values.reshape(-1, width).copy()
            values[~valid] = 0
        update("values", values.tobytes() if valid is not None else memoryview(values))
    else:
        raise DigestError(f"{path}: no content digest for Arrow type {t}")


def _digest_v1(body: pa.Table) -> str:
    """Definition 1 (rounds committed before 2026-12-06; module docstring)."""
    sink = _HashSink()
    pq.write_table(body.sort_by("triplet_id"), sink, compression="none", use_dictionary=False,
                   write_statistics=False, store_schema=False, row_group_size=1 << 20)
    return sink.hash.hexdigest()


class _HashSink(io.RawIOBase):
    """A write-only file that feeds what is written to a sha256 (the bytes are not kept)."""

    def __init__(self) -> None:
        super().__init__()
        self.hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.hash.update(data)
        return memoryview(data).nbytes
