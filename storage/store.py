"""A run's workdir: committed rounds, the training pool, blobs, adapters and the metrics index.

Layout (readable without layerboot; see README "Dashboards"):

    <workdir>/blobs/<ab>/<sha256>.png               content-addressed images, write-once
    <workdir>/manifests/round=NN/part-<digest>.parquet   one immutable manifest per round
    <workdir>/manifests/round=NN/_COMMITTED.json    the commit marker (written last)
    <workdir>/manifests/_staging/...                rounds being committed (ignored by readers)
    <workdir>/metrics/rounds.parquet                one row per committed round
    <workdir>/adapters/round=NN/                    the IC-LoRA adapter trained in round NN

A round exists once its marker and the manifest the marker names are both in round=NN/. Both
are written to a staging folder that is then published in one rename (locally) or copied with
the manifest last (object stores, where each copy appears whole): a crash at any point leaves
either the whole round or nothing visible, also to readers that only look at the Parquet files.
"""

from __future__ import annotations

import contextlib
import io
import json
import posixpath
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from storage import schema
from storage.blobs import BlobStore, blob_key
from storage.faults import failpoint
from storage.fs import Location
from storage.hashing import sha256_hex, stable_id
from storage.images import decode_image, encode_png

MARKER = "_COMMITTED.json"
STAGING = "_staging"
_ROUND_DIR = re.compile(r"^round=(\d+)$")


class StoreError(RuntimeError):
    """The store refuses an operation that would make it inconsistent."""


class RoundAlreadyCommitted(StoreError):
    pass


@dataclass(frozen=True)
class CommitInfo:
    round: int
    rows: int
    content_digest: str
    noop: bool  # True when the identical round was already committed


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def content_digest(table: pa.Table) -> str:
    """What a round *says*, independent of row order and timestamps: two commits with the same
    digest are the same round (so re-committing it is an exact no-op)."""
    body = table.drop_columns(["created_at"]).sort_by("triplet_id").to_pylist()
    return stable_id(json.dumps(body, sort_keys=True, default=str), length=64)


class Store:
    def __init__(self, workdir: str):
        self.loc = Location.parse(workdir)
        self.blobs = BlobStore(self.loc)

    @property
    def uri(self) -> str:
        return self.loc.uri(self.loc.root)

    # ---- layout ---------------------------------------------------------------------------
    def round_dir(self, r: int) -> str:
        return self.loc.join("manifests", f"round={r:02d}")

    def adapter_dir(self, r: int) -> str:
        return self.loc.join("adapters", f"round={r:02d}")

    def metrics_path(self) -> str:
        return self.loc.join("metrics", "rounds.parquet")

    # ---- images ---------------------------------------------------------------------------
    def put_image(self, image: Image.Image) -> tuple[str, str]:
        """Store an image as a PNG blob; returns (blob key, sha256)."""
        return self.blobs.put(encode_png(image))

    def read_image(self, key: str, size: int | None = None, mode: str = "RGB") -> Image.Image:
        return decode_image(self.blobs.get(key), key, size=size, mode=mode)

    # ---- reading committed rounds ---------------------------------------------------------
    def marker(self, r: int) -> dict[str, Any] | None:
        """Round r's commit marker, or None while r is not committed (no marker, or the manifest
        it names not published yet: an object-store commit that stopped half-way)."""
        path = posixpath.join(self.round_dir(r), MARKER)
        if not self.loc.exists(path):
            return None
        marker = json.loads(self.loc.read_bytes(path))
        return marker if self.loc.exists(posixpath.join(self.round_dir(r), marker["file"])) else None

    def committed_rounds(self) -> list[int]:
        """Rounds whose folder holds the marker and a manifest (published last: a commit is complete)."""
        root = self.loc.join("manifests")
        if not self.loc.exists(root):
            return []
        files: dict[int, set[str]] = {}
        for path in self.loc.fs.find(root):
            parts = posixpath.relpath(path, root).split("/")
            if len(parts) == 2 and (m := _ROUND_DIR.match(parts[0])):
                files.setdefault(int(m.group(1)), set()).add(parts[1])
        return sorted(r for r, names in files.items()
                      if MARKER in names and any(n.startswith("part-") and n.endswith(".parquet") for n in names))

    def staged_rounds(self) -> list[int]:
        """Rounds with a commit that started and never finished (a crash mid-commit)."""
        root = self.loc.join("manifests", STAGING)
        if not self.loc.exists(root):
            return []
        names = (posixpath.basename(p.rstrip("/")) for p in self.loc.fs.ls(root, detail=False))
        return sorted({int(n.split(".")[0].removeprefix("round=")) for n in names if n.startswith("round=")})

    def read_round(self, r: int) -> pa.Table:
        marker = self.marker(r)
        if marker is None:
            raise StoreError(f"round {r} is not committed in {self.uri}")
        data = self.loc.read_bytes(posixpath.join(self.round_dir(r), marker["file"]))
        if sha256_hex(data) != marker["manifest_sha256"]:
            raise StoreError(f"round {r}: manifest {marker['file']} does not match its commit marker")
        table = pq.read_table(io.BytesIO(data))
        return table.cast(schema.MANIFEST_SCHEMA)

    def manifest(self, rounds: Iterable[int] | None = None) -> pa.Table:
        """Rows of the given committed rounds (all committed rounds by default)."""
        wanted = self.committed_rounds() if rounds is None else list(rounds)
        tables = [self.read_round(r) for r in wanted]
        return pa.concat_tables(tables) if tables else schema.empty()

    def pool(self, after_round: int) -> pa.Table:
        """The training pool after round r: accepted train rows of committed rounds <= r
        (seeds and user triplets of round 0, then accepted candidates and cycle triplets)."""
        rounds = [r for r in self.committed_rounds() if r <= after_round]
        table = self.manifest(rounds)
        keep = pc.and_(pc.equal(table["split"], "train"), table["accepted"])
        return table.filter(keep)

    def test_split(self) -> pa.Table:
        table = self.manifest([r for r in self.committed_rounds() if r == 0])
        return table.filter(pc.equal(table["split"], "test"))

    # ---- committing -----------------------------------------------------------------------
    def commit_round(
        self, r: int, table: pa.Table, adapter_dir: str | None = None, metrics: dict[str, Any] | None = None
    ) -> CommitInfo:
        """Commit round r all at once: adapter and manifest first, the marker last. `metrics` are
        the orchestrator's measurements (schema.ROUND_EXTRA_FIELDS), kept in the marker.

        Re-committing identical content is a no-op; different content for a committed round,
        a gap in the round sequence, or rows pointing at missing blobs are refused.
        """
        table = table.cast(schema.MANIFEST_SCHEMA)
        schema.validate(table)
        if table.num_rows and set(table["round"].to_pylist()) != {r}:
            raise StoreError(f"round {r}: rows carry round(s) {sorted(set(table['round'].to_pylist()))}")
        digest = content_digest(table)
        existing = self.marker(r)
        if existing is not None:
            if existing["content_digest"] == digest:
                return CommitInfo(r, existing["rows"], digest, noop=True)
            raise RoundAlreadyCommitted(
                f"round {r} is already committed in {self.uri} with different content "
                f"(committed {existing['committed_at']}); rounds are immutable"
            )
        missing = [q for q in range(r) if self.marker(q) is None]
        if missing:
            raise StoreError(f"cannot commit round {r}: round(s) {missing} are not committed yet")
        self._check_blobs(table)
        unknown = set(metrics or {}) - set(schema.ROUND_EXTRA_FIELDS)
        if unknown:
            raise StoreError(f"round {r}: unknown metric(s) {sorted(unknown)}; see storage/schema.py")

        adapter_uri = self._copy_adapter(r, adapter_dir) if adapter_dir else None
        failpoint(f"commit-r{r:02d}-adapter")
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
        name = f"part-{digest[:16]}.parquet"
        marker = self._marker_body(r, table, digest, name, sha256_hex(data), adapter_uri) | (metrics or {})

        stage = self.loc.join("manifests", STAGING, f"round={r:02d}.{uuid.uuid4().hex}")
        try:
            self.loc.write_atomic(posixpath.join(stage, name), data)
            failpoint(f"commit-r{r:02d}-manifest")
            self.loc.write_atomic(posixpath.join(stage, MARKER), json.dumps(marker, indent=1).encode())
            failpoint(f"commit-r{r:02d}-staged")
            final = self.round_dir(r)
            self.loc.remove_tree(final)  # only ever a torn copy without its manifest: see marker()
            self.loc.publish_dir(stage, final, last=name, before_last=lambda: failpoint(f"commit-r{r:02d}-publishing"))
        except Exception:
            with contextlib.suppress(Exception):  # e.g. no space left: free what this attempt wrote
                self.loc.remove_tree(stage)
            raise
        failpoint(f"commit-r{r:02d}-published")
        self._remove_staging(r)  # left behind by commits of this round that were killed
        self.refresh_metrics()
        return CommitInfo(r, table.num_rows, digest, noop=False)

    def _remove_staging(self, r: int) -> None:
        root = self.loc.join("manifests", STAGING)
        if self.loc.exists(root):
            for path in self.loc.fs.ls(root, detail=False):
                if posixpath.basename(path.rstrip("/")).startswith(f"round={r:02d}."):
                    self.loc.remove_tree(path)

    def _check_blobs(self, table: pa.Table) -> None:
        for panel in (*schema.PANELS, "footprint"):
            for key, sha in zip(table[f"{panel}_uri"].to_pylist(), table[f"{panel}_sha256"].to_pylist()):
                if key is None:
                    continue
                if key != blob_key(sha):
                    raise StoreError(f"{panel}_uri {key} does not match {panel}_sha256 {sha}")
                if not self.blobs.exists(key):
                    raise StoreError(f"{panel}_uri {key} points at a missing blob")

    def _copy_adapter(self, r: int, adapter_dir: str) -> str:
        src = Location.parse(adapter_dir)
        dst = self.adapter_dir(r)
        for path in sorted(src.fs.find(src.root)):
            rel = posixpath.relpath(path, src.root)
            self.loc.write_atomic(posixpath.join(dst, rel), src.read_bytes(path))
        return self.loc.uri(dst)

    def _marker_body(self, r, table, digest, name, manifest_sha, adapter_uri) -> dict[str, Any]:
        source, split, accepted = (table[c].to_pylist() for c in ("source", "split", "accepted"))
        rows = list(zip(source, split, accepted))
        candidates = sum(s == "generated" for s, _, _ in rows)
        chosen = sum(s == "generated" and a for s, _, a in rows)
        previous_pool = self.marker(r - 1)["pool_size"] if r > 0 else 0
        return {
            "round": r,
            "run_id": table["run_id"][0].as_py() if table.num_rows else "",
            "committed_at": now_utc().isoformat(),
            "rows": table.num_rows,
            "candidates": candidates,
            "accepted": chosen,
            "selection_rate": chosen / candidates if candidates else None,
            "cycle_added": sum(s == "cycle" and a for s, _, a in rows),
            "seeds_added": sum(s in ("seed", "user") for s, _, _ in rows),
            "test_rows": sum(sp == "test" for _, sp, _ in rows),
            "pool_size": previous_pool + sum(sp == "train" and a for _, sp, a in rows),
            "adapter_uri": adapter_uri,
            "manifest_sha256": manifest_sha,
            "content_digest": digest,
            "file": name,
            "schema_version": schema.SCHEMA_VERSION,
        }

    # ---- metrics index --------------------------------------------------------------------
    def refresh_metrics(self) -> pa.Table:
        """Rebuild metrics/rounds.parquet from the commit markers (the markers are the truth)."""
        rows = []
        for r in self.committed_rounds():
            m = dict(self.marker(r))
            m["committed_at"] = datetime.fromisoformat(m["committed_at"])
            rows.append({k: m.get(k) for k in schema.ROUNDS_SCHEMA.names})
        table = schema.to_table(rows, schema.ROUNDS_SCHEMA)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.loc.write_atomic(self.metrics_path(), buf.getvalue())
        return table

    def metrics(self) -> pa.Table:
        """The rounds-metrics table, rebuilt first if it lags behind the committed rounds."""
        path = self.metrics_path()
        if self.loc.exists(path):
            table = pq.read_table(io.BytesIO(self.loc.read_bytes(path))).cast(schema.ROUNDS_SCHEMA)
            if table["round"].to_pylist() == self.committed_rounds():
                return table
        return self.refresh_metrics()
