"""`layerboot fsck`: check a workdir against its committed rounds, and optionally clean it up.

Checked: every committed round's marker and manifest (hash against the marker, rows valid), every
row's blobs (present, and hashing to their address), and what nothing needs any more: blobs no
committed round and no unfinished round's work references, files under blobs/ that are not blobs,
temp files of interrupted atomic writes, staging folders of commits that never finished and
round folders without a commit marker (a torn object-store publish).

`repair` removes only the last group, under the workdir lock (never while a run is writing), and
never a blob that any committed round or unfinished work references, never a committed manifest.
A missing or corrupt referenced blob, or an unreadable manifest, is reported: nothing can repair
it here. While any committed manifest cannot be read, no blob is removed (its references are
unknown).
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import pyarrow.parquet as pq

from storage import schema
from storage.blobs import BlobError, blob_key, parse_blob_key
from storage.fs import is_temp_name
from storage.hashing import is_sha256_hex, sha256_hex
from storage.lock import Holder, WorkdirLock
from storage.status import work_rounds
from storage.store import MARKER, STAGING, Store

# what can be removed safely, and what cannot be repaired here
REPAIRABLE = ("orphan_blob", "stray_file", "temp_file", "staging", "torn_round")
UNREPAIRABLE = ("bad_manifest", "bad_reference", "missing_blob", "corrupt_blob", "missing_adapter", "bad_work_file")
_URI_COLUMNS = tuple(f"{p}_uri" for p in (*schema.PANELS, "footprint"))
_SKIP = (".prefect",)  # ephemeral Prefect state (SQLite) under a local workdir: not ours to judge


@dataclass(frozen=True)
class Finding:
    kind: str  # one of REPAIRABLE or UNREPAIRABLE
    path: str  # relative to the workdir
    detail: str
    repairable: bool


@dataclass
class FsckReport:
    workdir: str
    rounds: list[int] = field(default_factory=list)  # committed rounds checked
    rows: int = 0  # manifest rows checked
    blobs_checked: int = 0  # distinct referenced blobs hashed
    kept_for_work: int = 0  # blobs only unfinished rounds' work references (kept for `resume`)
    findings: list[Finding] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # paths removed by --repair
    lock: dict[str, Any] | None = None  # who holds the workdir lock, if anyone

    @property
    def unrepaired(self) -> list[Finding]:
        done = set(self.repaired)
        return [f for f in self.findings if f.path not in done]

    @property
    def clean(self) -> bool:
        return not self.findings

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.kind] = out.get(f.kind, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"counts": self.counts(), "unrepaired": [asdict(f) for f in self.unrepaired]}


def fsck(store: Store, repair: bool = False, on_takeover: Callable[[Holder, str], None] | None = None) -> FsckReport:
    """Check `store`; with `repair`, hold the workdir lock, check, and remove what is repairable."""
    if not repair:
        return _check(store)
    with WorkdirLock(store.loc, "layerboot fsck --repair", on_takeover=on_takeover):
        report = _check(store)
        report.lock = None  # that is us
        for f in report.findings:
            if not f.repairable:
                continue
            path = store.loc.join(f.path)
            if f.kind in ("staging", "torn_round"):
                store.loc.remove_tree(path)
            elif store.loc.exists(path):
                store.loc.fs.rm_file(path)
            report.repaired.append(f.path)
        return report


def _check(store: Store) -> FsckReport:
    loc = store.loc
    report = FsckReport(workdir=store.uri)
    rel = lambda path: posixpath.relpath(path, loc.root)  # noqa: E731
    holder = WorkdirLock(loc, "fsck").holder()
    report.lock = asdict(holder) if holder else None

    # 1. committed rounds: marker, manifest, row references
    refs: dict[str, str] = {}  # blob key -> where it is first referenced
    unreadable: list[str] = []
    for r in store.committed_rounds():
        report.rounds.append(r)
        try:
            table = store.read_round(r, validate=False)
        except Exception as e:  # noqa: BLE001 - whatever is wrong with it, it is reported, never removed
            report.findings.append(Finding("bad_manifest", rel(store.round_dir(r)), f"round {r}: {e}", False))
            unreadable.append(f"round {r}")
            continue
        report.rows += table.num_rows
        ids = table.column("triplet_id").to_pylist()
        for col in _URI_COLUMNS:
            sha_col = col.removesuffix("_uri") + "_sha256"
            for tid, key, sha in zip(ids, table.column(col).to_pylist(), table.column(sha_col).to_pylist()):
                if key is None and sha is None:
                    continue
                where = f"round {r}, triplet {tid}, {col}"
                if not (isinstance(sha, str) and is_sha256_hex(sha)) or key != blob_key(sha):
                    report.findings.append(Finding("bad_reference", rel(store.round_dir(r)),
                                                   f"{where}: {key!r} is not the blob key of sha256 {sha!r}", False))
                    continue
                refs.setdefault(key, where)
        marker = store.marker(r) or {}
        if marker.get("adapter_uri") and not loc.exists(store.adapter_dir(r)):
            report.findings.append(Finding("missing_adapter", rel(store.adapter_dir(r)),
                                           f"round {r}: its marker names an adapter that is not there", False))

    # 2. referenced blobs: present and hashing to their address
    for key, where in sorted(refs.items()):
        path = loc.join(key)
        if not loc.exists(path):
            report.findings.append(Finding("missing_blob", key, f"referenced by {where}", False))
            continue
        actual = sha256_hex(loc.read_bytes(path))
        report.blobs_checked += 1
        if actual != parse_blob_key(key):
            report.findings.append(Finding("corrupt_blob", key, f"hashes to {actual}; referenced by {where}", False))

    # 3. blobs unfinished rounds still need (`resume` reads their work shards)
    work_refs: set[str] = set()
    for r in work_rounds(store):
        root = loc.join("work", f"round={r:02d}")
        for path in sorted(loc.fs.find(root)):
            if not path.endswith(".parquet") or is_temp_name(posixpath.basename(path)):
                continue
            try:
                table = pq.read_table(io.BytesIO(loc.read_bytes(path)))
            except Exception as e:  # noqa: BLE001
                report.findings.append(Finding("bad_work_file", rel(path), f"unreadable work shard: {e}", False))
                unreadable.append(rel(path))
                continue
            for col in _URI_COLUMNS:
                if col in table.column_names:
                    work_refs.update(k for k in table.column(col).to_pylist() if k)

    # 4. every file of the workdir: blobs nothing references, strays, temp files
    manifests = loc.join("manifests")
    for path in sorted(loc.fs.find(loc.root)) if loc.exists(loc.root) else []:
        key = rel(path)
        if key.split("/", 1)[0] in _SKIP:
            continue
        if is_temp_name(posixpath.basename(path)):
            report.findings.append(Finding("temp_file", key, "left by an interrupted write", True))
            continue
        if not key.startswith("blobs/"):
            continue
        try:
            parse_blob_key(key)
        except BlobError:
            report.findings.append(Finding("stray_file", key, "under blobs/ but not named like a blob", True))
            continue
        if key in refs:
            continue
        if key in work_refs:
            report.kept_for_work += 1
            continue
        if unreadable:
            report.findings.append(Finding("orphan_blob", key, "referenced by no committed round; kept while "
                                           f"{', '.join(unreadable)} cannot be read", False))
        else:
            report.findings.append(Finding("orphan_blob", key, "referenced by no committed round", True))

    # 5. commits that never finished: staging folders, round folders without a marker
    staging = posixpath.join(manifests, STAGING)
    if loc.exists(staging):
        for entry in sorted(loc.fs.ls(staging, detail=False)):
            report.findings.append(Finding("staging", rel(entry.rstrip("/")), "a commit that never finished", True))
    if loc.exists(manifests):
        for entry in sorted(loc.fs.ls(manifests, detail=False)):
            entry = entry.rstrip("/")
            if posixpath.basename(entry).startswith("round=") and not loc.exists(posixpath.join(entry, MARKER)):
                report.findings.append(Finding("torn_round", rel(entry),
                                               "round folder without a commit marker: not committed", True))
    return report
