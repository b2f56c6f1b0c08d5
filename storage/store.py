"""A run's workdir: committed rounds, the training pool, blobs, adapters and the metrics index.

Layout (readable without layerboot; see docs/dashboards.md):

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
import functools
import io
import json
import os
import posixpath
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from storage import schema
from storage.blobs import BlobStore
from storage.digest import DIGEST_VERSION, DIGEST_VERSION_KEY, IGNORED, DigestError, content_digest, version_of
from storage.faults import failpoint
from storage.fs import Location, is_temp_name
from storage.hashing import sha256_hex
from storage.images import decode_image, encode_png
from storage.overrides import effective_accepted, in_effect, load_overrides

MARKER = "_COMMITTED.json"
PART_NAME = re.compile(r"^part-[0-9a-f]{16}\.parquet$")  # a round's manifest: part-<content digest[:16]>.parquet
TRAIN_LOG = "train_log.json"  # in an adapter folder: the per-step losses of its training
ADAPTER_FILES = "adapter_files"  # in a marker: the committed adapter's files, relative path -> sha256
STAGING = "_staging"
_ROUND_DIR = re.compile(r"^round=(\d+)$")


class StoreError(RuntimeError):
    """The store refuses an operation that would make it inconsistent."""


class RoundAlreadyCommitted(StoreError):
    pass


class DamagedRound(StoreError):
    """A committed round whose marker and manifest do not agree (or whose folder holds more or
    less than the two): nothing of it is trusted until `layerboot fsck` says why."""


def read_json(loc: Location, path: str) -> Any:
    """A JSON file of the workdir; a malformed one is a StoreError naming it (never a traceback)."""
    data = loc.read_bytes(path)
    try:
        return json.loads(data)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise StoreError(f"{loc.uri(path)}: malformed JSON ({e})") from None


def derived_figures(table: pa.Table) -> dict[str, Any]:
    """The marker's figures that follow from the manifest alone (all but pool_size, which also
    depends on earlier rounds and overrides)."""
    candidate, train = pc.is_in(table["source"], pa.array(schema.CANDIDATE_SOURCES)), pc.equal(table["split"], "train")
    accepted = table["accepted"]

    def count(*masks) -> int:  # rows where every mask holds
        return pc.sum(functools.reduce(pc.and_, masks)).as_py() or 0

    candidates, chosen = count(candidate), count(candidate, accepted)
    return {
        "run_id": table["run_id"][0].as_py() if table.num_rows else "",
        "rows": table.num_rows,
        "candidates": candidates,
        "accepted": chosen,
        "selection_rate": chosen / candidates if candidates else None,
        "cycle_added": count(pc.equal(table["source"], "cycle"), accepted),
        "seeds_added": count(pc.is_in(table["source"], pa.array(["seed", "user"]))),
        "test_rows": count(pc.equal(table["split"], "test")),
        "train_accepted": count(train, accepted),
    }


@dataclass(frozen=True)
class CommitInfo:
    round: int
    rows: int
    content_digest: str
    noop: bool  # True when the identical round was already committed


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


# Manifests this process has proven against their markers: (manifest path, marker) -> the file's
# signature when proven. A manifest whose size, modification time and inode (ETag on object
# stores) are unchanged since is not read again to answer "is round r sound?"; reading its rows
# still re-hashes the bytes read. A new process proves each round once.
_PROVEN: dict[tuple[str, str], tuple] = {}


def _signature(info: dict[str, Any]) -> tuple:
    return tuple(info.get(k) for k in ("size", "mtime", "ino", "ETag", "LastModified", "etag", "generation"))


# Parquet min/max statistics where a reader's filter can use them (`round <= 3`, `split == "test"`):
# not on ids, hashes, blob keys, prompts, maps: random hex prunes nothing, and those statistics
# were ~15% of a manifest's encoding time.
_STATISTICS = ("run_id", "round", "source", "split", "panel_size", "accepted", "seed", "created_at")


def _zstd_parquet(table: pa.Table) -> bytes:
    """A manifest's bytes."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=list(_STATISTICS))
    return buf.getvalue()


def manifest_name(digest: str) -> str:
    """A round's manifest file: named by its content digest, so a folder's one file says what it holds."""
    return f"part-{digest[:16]}.parquet"


def _same_rows(a: pa.Table, b: pa.Table) -> bool:
    """The same rows, in any order and whenever they were written (`created_at` aside)."""
    if a.num_rows != b.num_rows:
        return False
    a, b = (t.drop_columns(list(IGNORED)).sort_by("triplet_id") for t in (a, b))
    return a.equals(b)


_FIGURE_COLUMNS = ("run_id", "source", "split", "accepted")  # what derived_figures reads


def _marker_key(path: str, marker: dict[str, Any]) -> tuple[str, str]:
    return path, json.dumps(marker, sort_keys=True, default=str)


class Store:
    def __init__(self, workdir: str):
        self.loc = Location.parse(workdir)
        self.blobs = BlobStore(self.loc)
        self._verified: set[tuple[int, str]] = set()  # (round, manifest sha256) proven by verify_round
        self._keys_checked: set[tuple[int, str]] = set()  # (round, manifest sha256) whose image keys read_round checked

    @property
    def uri(self) -> str:
        return self.loc.uri(self.loc.root)

    # ---- layout ---------------------------------------------------------------------------
    def round_dir(self, r: int) -> str:
        return self.loc.join("manifests", f"round={r:02d}")

    def adapter_dir(self, r: int) -> str:
        return self.loc.join("adapters", f"round={r:02d}")

    def train_log(self, r: int) -> list[dict[str, Any]]:
        """Per-step losses of round r's training ({step, task, rec, cyc, lambda}), kept in its
        committed adapter folder; [] for a round without an adapter."""
        path = posixpath.join(self.adapter_dir(r), TRAIN_LOG)
        return read_json(self.loc, path) if self.loc.exists(path) else []

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
        it names not published yet: an object-store commit that stopped half-way). A marker that
        is not JSON, or whose `file` is not a plain part-file name inside the round's folder, is
        refused (DamagedRound): readers never follow it elsewhere. Only its shape is checked
        here; `verify_round` checks it against the manifest. An older schema's marker is returned
        in today's layout (schema.upgrade_round)."""
        path = posixpath.join(self.round_dir(r), MARKER)
        if not self.loc.exists(path):
            return None
        marker = read_json(self.loc, path)
        name = marker.get("file") if isinstance(marker, dict) else None
        if not isinstance(name, str) or not PART_NAME.match(name):
            raise DamagedRound(f"round {r} is damaged: its commit marker names {name!r}, not a part file "
                               "inside the round's folder; run `layerboot fsck`")
        if not self.loc.exists(posixpath.join(self.round_dir(r), name)):
            return None
        return schema.upgrade_round(marker, marker.get("schema_version"))

    def round_files(self, r: int) -> list[str]:
        """Names of the files in round r's folder."""
        d = self.round_dir(r)
        if not self.loc.exists(d):
            return []
        return sorted(posixpath.relpath(p, d) for p in self.loc.fs.find(d))

    def unmarked_rounds(self) -> list[int]:
        """Rounds whose folder holds a manifest but no commit marker (the marker was lost or
        deleted). Not committed, so invisible to layerboot; never overwritten or removed:
        `layerboot fsck --remark R` restores the marker after checking it against rounds.parquet."""
        files = self._round_files()
        return sorted(r for r, names in files.items()
                      if MARKER not in names and any(n.endswith(".parquet") for n in names))

    def _round_files(self) -> dict[int, set[str]]:
        """round -> names of the files directly in its folder under manifests/."""
        root = self.loc.join("manifests")
        files: dict[int, set[str]] = {}
        if not self.loc.exists(root):
            return files
        for path in self.loc.fs.find(root):
            parts = posixpath.relpath(path, root).split("/")
            if len(parts) == 2 and (m := _ROUND_DIR.match(parts[0])):
                files.setdefault(int(m.group(1)), set()).add(parts[1])
        return files

    def committed_rounds(self) -> list[int]:
        """Rounds whose folder holds the marker and a manifest (published last: a commit is complete)."""
        files = self._round_files()
        return sorted(r for r, names in files.items()
                      if MARKER in names and any(n.startswith("part-") and n.endswith(".parquet") for n in names))

    def staged_rounds(self) -> list[int]:
        """Rounds with a commit that started and never finished (a crash mid-commit)."""
        root = self.loc.join("manifests", STAGING)
        if not self.loc.exists(root):
            return []
        names = (posixpath.basename(p.rstrip("/")) for p in self.loc.fs.ls(root, detail=False))
        return sorted({int(n.split(".")[0].removeprefix("round=")) for n in names if n.startswith("round=")})

    def verify_round(self, r: int, level: str = "rows",
                     columns: Sequence[str] | None = None) -> tuple[dict[str, Any], pa.Table | None]:
        """A committed round's marker and rows, the marker proven against the manifest it names:
        the round folder holds exactly the marker and that part file, the file hashes to the
        marker's manifest_sha256, and its rows give the marker's row count and figures (candidates,
        accepted, ... and a pool size that earlier rounds allow). Anything else raises DamagedRound.

        `level` says how much is read:
        - "rows" (readers): all of the above; the rows are returned. The figures are checked once
          per process for a file unchanged since (its bytes are hashed on every read).
        - "marker": (marker, None), proven as "rows" once per process for a file unchanged since
          (then neither read nor hashed again).
        - "glance" (`layerboot status`): (marker, None); a round not proven in this process is
          checked on its folder and the manifest's Parquet footer only: the file's size (markers
          record it since 2026-12-06), its row count and readable schema. Its bytes are not hashed.
        - "full" (`layerboot fsck`): "rows", plus the content digest (the file's name) derived
          again from the rows, every time. Readers skip it: the file's hash already binds the rows
          to the marker, and a commit compares digests it computes itself.
        `columns` (level "rows"): decode only those (and, the first time, the ones the figures need),
        so a reader of a few columns of a 1M-row round holds only them."""
        marker = self.marker(r)
        if marker is None:
            raise StoreError(f"round {r} is not committed in {self.uri}")

        def damaged(why: str) -> DamagedRound:
            return DamagedRound(f"round {r} is damaged: {why}; run `layerboot fsck`")

        name = marker["file"]
        files = set(self.round_files(r))
        if files != {MARKER, name}:
            extra = sorted(files - {MARKER, name})
            raise damaged(f"its folder holds {', '.join(extra)} besides {name} and the marker")
        path = posixpath.join(self.round_dir(r), name)
        key = _marker_key(self.loc.uri(path), marker)
        if level in ("marker", "glance"):
            info = self.loc.fs.info(path)
            if _PROVEN.get(key) == _signature(info):
                return marker, None
            if level == "glance":
                self._glance(r, marker, path, info, damaged)
                return marker, None
        data = self.loc.read_bytes(path)
        sha = sha256_hex(data)
        if sha != marker.get("manifest_sha256"):
            raise damaged(f"manifest {name} does not match its commit marker")
        proving = level == "full" or (r, sha) not in self._verified
        if level == "marker":  # the rows are not returned: decode what the figures need
            columns = ()
        decode = None if columns is None or level == "full" else list(dict.fromkeys(
            [*columns, *(_FIGURE_COLUMNS if proving else ())]))
        try:
            # table: today's layout; stored: as digested (None when only some columns are decoded)
            stored, table = schema.load_manifest(data, decode)
        except (pa.ArrowException, ValueError) as e:
            raise damaged(f"manifest {name} cannot be read ({e})") from None
        if proving:
            if marker.get("round") != r:
                raise damaged(f"its marker says round {marker.get('round')!r}")
            if table.num_rows != marker.get("rows"):
                raise damaged(f"its marker says {marker.get('rows')!r} rows, manifest {name} holds {table.num_rows}")
            if level == "full":  # by the definition the marker names, never the other one
                try:
                    digest = content_digest(stored, version_of(marker.get("content_digest"),
                                                               marker.get(DIGEST_VERSION_KEY)))
                except DigestError as e:
                    raise damaged(f"its marker's {e}") from None
                if digest != marker.get("content_digest") or name != manifest_name(digest):
                    raise damaged(f"the content of manifest {name} does not match its commit marker")
            figures = derived_figures(table)
            train_accepted = figures.pop("train_accepted")
            wrong = sorted(k for k, v in figures.items() if marker.get(k) != v)
            if wrong:
                raise damaged(f"its marker's {', '.join(wrong)} do not follow from manifest {name}")
            pool = marker.get("pool_size")
            before = 0 if r == 0 else (self.marker(r - 1) or {}).get("pool_size")
            if not isinstance(pool, int) or not isinstance(before, int) or pool < 0 or (
                    not load_overrides(self.loc) and pool != before + train_accepted):
                raise damaged(f"its marker's pool_size {pool!r} does not follow from the rounds before it")
            self._verified.add((r, sha))
        _PROVEN[key] = _signature(self.loc.fs.info(path))
        if level == "marker":
            return marker, None
        return marker, table if decode is None else table.select(list(columns))

    def _glance(self, r: int, marker: dict[str, Any], path: str, info: dict[str, Any], damaged) -> None:
        """`verify_round(level="glance")` for a round not proven in this process: the manifest's
        size and footer (row count, schema) against the marker, reading only the file's tail."""
        name = marker["file"]
        size = info.get("size")
        if marker.get("round") != r:
            raise damaged(f"its marker says round {marker.get('round')!r}")
        if "manifest_bytes" in marker and marker["manifest_bytes"] != size:
            raise damaged(f"manifest {name} does not match its commit marker")
        try:
            tail = self.loc.fs.cat_file(path, start=max(0, size - (1 << 16)))
            need = int.from_bytes(tail[-8:-4], "little") + 8 if len(tail) >= 8 and tail[-4:] == b"PAR1" else 0
            if need > len(tail):
                tail = self.loc.fs.cat_file(path, start=max(0, size - need))
            sink = pa.BufferOutputStream()  # a copy in Arrow's memory (see schema.read_parquet)
            sink.write(tail)
            meta = pq.read_metadata(pa.BufferReader(sink.getvalue()))
            version = schema.schema_version_of(meta.schema.to_arrow_schema()) or 1
        except (pa.ArrowException, ValueError, OSError) as e:
            raise damaged(f"manifest {name} cannot be read ({e})") from None
        if version > schema.SCHEMA_VERSION:
            raise damaged(f"manifest {name} cannot be read (written by schema version {version})")
        if meta.num_rows != marker.get("rows"):
            raise damaged(f"its marker says {marker.get('rows')!r} rows, manifest {name} holds {meta.num_rows}")

    def read_round(self, r: int, validate: bool = True, columns: Sequence[str] | None = None) -> pa.Table:
        """A committed round's rows, its marker proven against the manifest (`verify_round`). The
        commit validated every row; here (unless `validate` is False, for `fsck`, which reports bad
        rows one by one) the image columns are checked again to be blob keys, so a manifest and
        marker rewritten behind our back still cannot point a reader outside blobs/ (nor pair a blob
        with another's hash). Cheap: ~5 ms per 100k rows (on the string buffers), once per manifest
        hash and process: the same bytes hold the same keys. `columns`: only those (a uri column
        is decoded and checked with its sha256)."""
        decode = None
        if columns is not None:
            pairs = [f"{c.removesuffix('_uri')}_sha256" for c in columns if c.endswith("_uri")]
            decode = list(dict.fromkeys([*columns, *pairs]))
        marker, table = self.verify_round(r, columns=decode)
        if validate and (r, marker["manifest_sha256"]) not in self._keys_checked:
            try:
                schema.check_uris(table)
            except schema.SchemaError as e:
                raise StoreError(f"round {r}: manifest {marker['file']}: {e}") from None
            if columns is None:
                self._keys_checked.add((r, marker["manifest_sha256"]))
        return table if columns is None else table.select(list(columns))

    def manifest(self, rounds: Iterable[int] | None = None, where=None, columns: Sequence[str] | None = None,
                 where_columns: Sequence[str] = ()) -> pa.Table:
        """Rows of the given committed rounds (all committed rounds by default), optionally only
        those where `where(table) -> boolean mask` holds. Rounds are read, verified and filtered
        in parallel threads (Arrow releases the GIL): a 1M-row pool query takes well under 1 s.
        `columns`: only those are decoded and returned (`where` sees them and `where_columns`):
        a 10M-row pool of every column is ~8 GB in memory, of the columns training reads ~1 GB."""
        wanted = self.committed_rounds() if rounds is None else list(rounds)
        decode = None if columns is None else list(dict.fromkeys([*columns, *where_columns]))

        def read(r: int) -> pa.Table:
            table = self.read_round(r, columns=decode)
            table = table if where is None else table.filter(where(table))
            return table if columns is None else table.select(list(columns))

        # a thread per core: more only adds rounds held decoded at once (memory), not speed
        with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1, len(wanted)))) as pool:
            tables = list(pool.map(read, wanted))
        if tables:
            return pa.concat_tables(tables)
        empty = schema.empty()
        return empty if columns is None else empty.select(list(columns))

    def pool(self, after_round: int, columns: Sequence[str] | None = None) -> pa.Table:
        """The training pool after round r: accepted train rows of committed rounds <= r
        (seeds and user triplets of round 0, then accepted candidates and cycle triplets), with
        the operator's overrides applied (storage/overrides.py); rows are returned as committed
        (only `columns`, when given)."""
        return self.train_rows([r for r in self.committed_rounds() if r <= after_round], in_pool=True, columns=columns)

    def rejected(self, after_round: int) -> pa.Table:
        """The training rows of committed rounds <= r that are not in `pool(r)`: candidates and
        cycle triplets the judge rejected (with their reasons) and rows an operator rejected."""
        return self.train_rows([r for r in self.committed_rounds() if r <= after_round], in_pool=False)

    def train_rows(self, rounds: Sequence[int], in_pool: bool, columns: Sequence[str] | None = None) -> pa.Table:
        """The training rows of the given committed rounds that are in the pool (`in_pool`), or
        not, with the operator's overrides applied: `pool` and `rejected` a round at a time."""
        effective = in_effect(load_overrides(self.loc))

        def where(t: pa.Table) -> pa.ChunkedArray:
            accepted = effective_accepted(t, effective)
            return pc.and_(pc.equal(t["split"], "train"), accepted if in_pool else pc.invert(accepted))

        return self.manifest(rounds, where=where, columns=columns, where_columns=("triplet_id", "split", "accepted"))

    def test_split(self) -> pa.Table:
        table = self.manifest([r for r in self.committed_rounds() if r == 0])
        return table.filter(pc.equal(table["split"], "test"))

    # ---- committing -----------------------------------------------------------------------
    def commit_round(
        self, r: int, table: pa.Table, adapter_dir: str | None = None, metrics: dict[str, Any] | None = None,
        panels: Sequence[str] = schema.PANELS,
    ) -> CommitInfo:
        """Commit round r all at once: adapter and manifest first, the marker last. `metrics` are
        the orchestrator's measurements (schema.ROUND_EXTRA_FIELDS), kept in the marker; `panels`
        the layer task's names of the three panel columns (recorded; one task per workdir).

        Re-committing identical content is a no-op; different content for a committed round,
        a gap in the round sequence, another task's panels or rows pointing at missing blobs are refused.
        """
        table = schema.with_panel_names(table.cast(schema.MANIFEST_SCHEMA), panels)
        with ThreadPoolExecutor(max_workers=1) as worker:  # the encoding beside the checks and the digest
            encoding = worker.submit(_zstd_parquet, table)  # (Arrow releases the GIL while it encodes)
            schema.validate(table)
            carried = set(pc.unique(table["round"]).to_pylist())
            if table.num_rows and carried != {r}:
                raise StoreError(f"round {r}: rows carry round(s) {sorted(carried)}")
            digest = content_digest(table)
            data = encoding.result()
        existing = self.marker(r)
        if existing is not None:
            # the rows themselves, in any order: the digest depends on row order, and is not
            # trusted alone to call different rows the same (storage/digest.py)
            if _same_rows(self.read_round(r), table):
                return CommitInfo(r, existing["rows"], existing["content_digest"], noop=True)
            raise RoundAlreadyCommitted(
                f"round {r} is already committed in {self.uri} with different content "
                f"(committed {existing['committed_at']}); rounds are immutable"
            )
        if MARKER not in (files := self.round_files(r)) and any(n.endswith(".parquet") for n in files):
            raise StoreError(f"round {r}: {self.loc.uri(self.round_dir(r))} holds a manifest without its commit "
                             "marker; refusing to overwrite it (`layerboot fsck` says how to re-mark it)")
        missing = [q for q in range(r) if self.marker(q) is None]
        if missing:
            raise StoreError(f"cannot commit round {r}: round(s) {missing} are not committed yet")
        if r > 0 and (first := self.marker(0)["panels"]) != list(panels):
            raise StoreError(f"round {r}: panels {list(panels)}, but this workdir holds a task with panels {first} "
                             "(one layer task per workdir)")
        self._check_blobs(table)
        unknown = set(metrics or {}) - set(schema.ROUND_EXTRA_FIELDS)
        if unknown:
            raise StoreError(f"round {r}: unknown metric(s) {sorted(unknown)}; see storage/schema.py")

        adapter_uri, adapter_files = self._copy_adapter(r, adapter_dir) if adapter_dir else (None, None)
        failpoint(f"commit-r{r:02d}-adapter")
        name = manifest_name(digest)
        manifest_sha = sha256_hex(data)
        marker = self._marker_body(r, table, digest, name, manifest_sha, adapter_uri) | (metrics or {})
        marker["manifest_bytes"] = len(data)  # lets `status` glance at a round without hashing it
        if adapter_files is not None:
            marker[ADAPTER_FILES] = adapter_files

        stage = self.loc.join("manifests", STAGING, f"round={r:02d}.{uuid.uuid4().hex}")
        try:
            self.loc.write_atomic(posixpath.join(stage, name), data)
            failpoint(f"commit-r{r:02d}-manifest")
            self.loc.write_atomic(posixpath.join(stage, MARKER), json.dumps(marker, indent=1).encode())
            failpoint(f"commit-r{r:02d}-staged")
            final = self.round_dir(r)
            self.loc.remove_tree(final)  # only ever a torn copy without its manifest (checked above)
            self.loc.publish_dir(stage, final, last=name, before_last=lambda: failpoint(f"commit-r{r:02d}-publishing"))
        except Exception:
            with contextlib.suppress(Exception):  # e.g. no space left: free what this attempt wrote
                self.loc.remove_tree(stage)
            raise
        failpoint(f"commit-r{r:02d}-published")
        self._remove_staging(r)  # left behind by commits of this round that were killed
        # proven by construction: the marker's figures come from the rows whose encoding was hashed
        path = posixpath.join(final, name)
        _PROVEN[_marker_key(self.loc.uri(path), json.loads(json.dumps(marker)))] = _signature(self.loc.fs.info(path))
        self._verified.add((r, manifest_sha))
        self.refresh_metrics()
        return CommitInfo(r, table.num_rows, digest, noop=False)

    def _remove_staging(self, r: int) -> None:
        root = self.loc.join("manifests", STAGING)
        if self.loc.exists(root):
            for path in self.loc.fs.ls(root, detail=False):
                if posixpath.basename(path.rstrip("/")).startswith(f"round={r:02d}."):
                    self.loc.remove_tree(path)

    def _check_blobs(self, table: pa.Table) -> None:
        # schema.validate made sure each key is its sha's; rows may share a blob, columns too
        keys = {panel: pc.unique(table[f"{panel}_uri"].drop_null()).to_pylist() for panel in schema.IMAGE_COLUMNS}
        gone = set(self.blobs.missing(k for column in keys.values() for k in column))  # listings, not a HEAD each
        for panel, column in keys.items():
            for key in column:
                if key in gone:
                    raise StoreError(f"{panel}_uri {key} points at a missing blob")

    def _copy_adapter(self, r: int, adapter_dir: str) -> tuple[str, dict[str, str]]:
        """Copy an adapter folder to adapters/round=NN/; returns its URI and each file's sha256
        (relative path -> hash), which the marker records so that `fsck` and a warm start can
        tell the committed adapter from one edited since."""
        src = Location.parse(adapter_dir)
        dst = self.adapter_dir(r)
        hashes: dict[str, str] = {}
        for path in sorted(src.fs.find(src.root)):
            rel = posixpath.relpath(path, src.root)
            data = src.read_bytes(path)
            hashes[rel] = sha256_hex(data)
            self.loc.write_atomic(posixpath.join(dst, rel), data)
        return self.loc.uri(dst), hashes

    def verify_adapter(self, r: int) -> dict[str, str] | None:
        """Check committed round r's adapter folder against the file hashes its marker recorded:
        the same files, each hashing as committed. Returns the recorded hashes, or None for a round
        committed before hashes were recorded (or re-marked by fsck): unchecked. Raises
        DamagedRound naming the first file that differs."""
        marker = self.marker(r)
        if marker is None:
            raise StoreError(f"round {r} is not committed in {self.uri}")
        recorded = marker.get(ADAPTER_FILES)
        if recorded is None:
            return None
        where = self.adapter_dir(r)
        if not isinstance(recorded, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in recorded.items()):
            raise DamagedRound(f"round {r} is damaged: its marker's {ADAPTER_FILES} is not a map of file hashes; "
                               "run `layerboot fsck`")
        found = self.loc.fs.find(where) if self.loc.exists(where) else []
        # (a write killed half-way leaves a temp file: fsck reports it as such, it is not the adapter)
        present = sorted(posixpath.relpath(p, where) for p in found if not is_temp_name(posixpath.basename(p)))
        for rel in sorted(set(recorded) | set(present)):
            path = self.loc.uri(posixpath.join(where, rel))
            if rel not in present:
                why = "is missing"
            elif rel not in recorded:
                why = "was not committed with the round"
            elif sha256_hex(self.loc.read_bytes(posixpath.join(where, rel))) != recorded[rel]:
                why = "does not hash as committed (edited since)"
            else:
                continue
            raise DamagedRound(f"round {r}'s adapter is damaged: {path} {why}; run `layerboot fsck`")
        return recorded

    def _marker_body(self, r, table, digest, name, manifest_sha, adapter_uri) -> dict[str, Any]:
        figures = derived_figures(table)
        train_accepted = figures.pop("train_accepted")
        previous_pool = 0
        if r > 0:  # overrides recorded so far count; without any, the previous marker has the number
            overridden = bool(load_overrides(self.loc))
            previous_pool = self.pool(r - 1).num_rows if overridden else self.marker(r - 1)["pool_size"]
        return {
            "round": r,
            "run_id": figures["run_id"],
            "committed_at": now_utc().isoformat(),
            "panels": list(schema.panel_names_of(table.schema)),
            **{k: figures[k] for k in ("rows", "candidates", "accepted", "selection_rate", "cycle_added",
                                       "seeds_added", "test_rows")},
            "pool_size": previous_pool + train_accepted,
            "adapter_uri": adapter_uri,
            "manifest_sha256": manifest_sha,
            "content_digest": digest,
            DIGEST_VERSION_KEY: DIGEST_VERSION,
            "file": name,
            "schema_version": schema.SCHEMA_VERSION,
        }

    # ---- metrics index --------------------------------------------------------------------
    def rounds_table(self, keep_unmarked: bool = True) -> pa.Table:
        """The rounds-metrics table built from the commit markers (the markers are the truth), each
        proven against its manifest first (a damaged round raises DamagedRound). Rows of unmarked
        rounds (marker lost) are kept from the current rounds.parquet: it is what `fsck --remark`
        checks them against, so it must never forget them."""
        rows = []
        for r in self.committed_rounds():
            m = dict(self.verify_round(r, level="marker")[0])
            m["committed_at"] = datetime.fromisoformat(m["committed_at"])
            rows.append({k: m.get(k) for k in schema.ROUNDS_SCHEMA.names})
        table = schema.to_table(rows, schema.ROUNDS_SCHEMA)
        unmarked = self.unmarked_rounds() if keep_unmarked else []
        if unmarked and (recorded := self.recorded_metrics()) is not None:
            kept = recorded.filter(pc.is_in(recorded["round"], pa.array(unmarked, pa.int32())))
            table = pa.concat_tables([table, kept]).sort_by("round")
        return table

    def recorded_metrics(self) -> pa.Table | None:
        """metrics/rounds.parquet as it is on disk (not rebuilt), or None without one."""
        path = self.metrics_path()
        if not self.loc.exists(path):
            return None
        try:
            return schema.upgrade_rounds_table(schema.read_parquet(self.loc.read_bytes(path)))
        except (pa.ArrowException, ValueError) as e:
            raise StoreError(f"{self.loc.uri(path)}: cannot be read ({e})") from None

    def refresh_metrics(self) -> pa.Table:
        """Rebuild metrics/rounds.parquet from the commit markers."""
        table = self.rounds_table()
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.loc.write_atomic(self.metrics_path(), buf.getvalue())
        return table

    def metrics(self, write: bool = True) -> pa.Table:
        """The rounds-metrics table, rebuilt first if it lags behind the committed rounds
        (and, with write=False, rebuilt in memory only: readers never modify the workdir)."""
        table = self.recorded_metrics()
        if table is not None and table["round"].to_pylist() == sorted(self.committed_rounds() + self.unmarked_rounds()):
            return table
        return self.refresh_metrics() if write else self.rounds_table()
