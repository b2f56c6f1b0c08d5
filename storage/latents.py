"""The latent cache's entries as files: what one must hold to be trusted, checked without torch.

An entry is a safetensors file `<cache>/<vae identity[:16]>/<panel size>/<key[:2]>/<key>.safetensors`
(models/iclora/encoded.py writes and reads them). Its header's `__metadata__` records the entry's
key and the sha256 of its tensors (`tensor_digest`: every tensor's name, dtype, shape and bytes,
in name order), so an entry edited after it was written (rewritten with zeros, truncated, copied
under another key) no longer matches what it records. A reader treats such an entry as missing
(it is encoded again); `layerboot fsck` reports it and `--repair` moves it to quarantine.

What this cannot tell: whether the encoder wrote the right latent for its key in the first place
(that needs the VAE: re-encoding, not a hash).

Format (https://github.com/huggingface/safetensors, "Format"): 8 bytes little-endian header size N,
N bytes of JSON header (tensor name -> {dtype, shape, data_offsets}, plus `__metadata__`, a map of
strings), then the tensors' bytes; offsets are relative to the end of the header.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import struct
from typing import Any

LATENT_CACHE = ("cache", "latents")  # inside a local workdir
SUFFIX = ".safetensors"
KEY_META, DIGEST_META = "layerboot.key", "layerboot.sha256"
_MAX_HEADER = 100 << 20  # as safetensors' own reader allows
_ENTRY_PATH = re.compile(r"^[0-9a-f]{16}/\d+/([^/]{2})/([^/]+)\.safetensors$")


class EntryError(ValueError):
    """A cache entry that is not what it says it is."""


def header(data: bytes) -> tuple[dict[str, Any], int]:
    """(the JSON header, where the tensors' bytes start) of a safetensors file's bytes."""
    if len(data) < 8:
        raise EntryError("shorter than a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise EntryError(f"its header size {n} does not fit the file ({len(data)} bytes)")
    try:
        head = json.loads(data[8:8 + n])
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise EntryError(f"its header is not JSON ({e})") from None
    if not isinstance(head, dict):
        raise EntryError("its header is not a JSON object")
    return head, 8 + n


def tensor_digest(data: bytes) -> str:
    """sha256 over the tensors of a safetensors file: name, dtype, shape and bytes of each, by name
    (not the header's layout or metadata, so recording the digest in the metadata leaves it as is)."""
    head, start = header(data)
    h = hashlib.sha256(b"layerboot-tensors-v1")
    for name in sorted(k for k in head if k != "__metadata__"):
        info = head[name]
        try:
            lo, hi = (int(x) for x in info["data_offsets"])
            dtype, shape = str(info["dtype"]), [int(x) for x in info["shape"]]
        except (TypeError, KeyError, ValueError):
            raise EntryError(f"tensor {name!r} has a malformed header entry") from None
        if not 0 <= lo <= hi <= len(data) - start:
            raise EntryError(f"tensor {name!r} lies outside the file")
        h.update(f"{name}:{dtype}:{shape};".encode())
        h.update(data[start + lo:start + hi])
    return h.hexdigest()


def entry_metadata(data: bytes, key: str) -> dict[str, str]:
    """The metadata a writer records in the entry whose (metadata-less) bytes are `data`."""
    return {KEY_META: key, DIGEST_META: tensor_digest(data)}


def check_entry(data: bytes, key: str) -> None:
    """Raise EntryError unless `data` is an entry recording `key` and its tensors' digest."""
    head, _ = header(data)
    meta = head.get("__metadata__")
    if not isinstance(meta, dict) or DIGEST_META not in meta:
        raise EntryError("records no content digest (written by another tool or an older layerboot)")
    if meta.get(KEY_META) != key:
        raise EntryError(f"records key {str(meta.get(KEY_META))[:80]!r}, not its own name's")
    if tensor_digest(data) != meta[DIGEST_META]:
        raise EntryError("its tensors do not hash to the digest it records (edited since it was written)")


def entry_key(rel: str) -> str | None:
    """The key of a cache entry from its path relative to the cache root, or None when the path is
    not laid out like an entry's."""
    m = _ENTRY_PATH.match(rel)
    if m is None or not m.group(2).startswith(m.group(1)):
        return None
    return m.group(2)


def cache_root(workdir_root: str) -> str:
    return posixpath.join(workdir_root, *LATENT_CACHE)
