"""Every content hash, id and derived seed in layerboot comes from here (one idea, one place)."""

from __future__ import annotations

import hashlib
import re

SHA256_PATTERN = r"^[0-9a-f]{64}$"  # lower-case hex, as hexdigest() writes it


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of raw bytes: the address of a blob."""
    return hashlib.sha256(data).hexdigest()


def _joined(parts: tuple[object, ...]) -> bytes:
    # Unit separator between parts: ("ab", "c") and ("a", "bc") must not collide.
    return "\x1f".join("" if p is None else str(p) for p in parts).encode()


def stable_id(*parts: object, length: int = 32) -> str:
    """A short, stable hex id for a tuple of values (triplet ids, run ids, content digests)."""
    return hashlib.sha256(_joined(parts)).hexdigest()[:length]


def derive_seed(*parts: object) -> int:
    """A deterministic 63-bit seed for (run, round, shard, index, ...): re-running a step gives the same bytes."""
    return int.from_bytes(hashlib.sha256(_joined(parts)).digest()[:8], "big") >> 1


def is_sha256_hex(text: str) -> bool:
    return isinstance(text, str) and re.fullmatch(SHA256_PATTERN, text) is not None
