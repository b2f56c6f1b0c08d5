"""`layerboot fsck`: check a workdir against its committed rounds, and optionally clean it up.

Checked: every committed round's marker against its manifest (Store.verify_round: the folder holds
exactly the two, hash, row count, content digest, figures) and against metrics/rounds.parquet,
every row's blobs (present, and hashing to their address), each committed round's adapter against
the file hashes its marker recorded (Store.verify_adapter; a round committed before they were
recorded is listed as unchecked), the banks of storage/unlabeled.py (unlabeled composites, layer-1
and layer-2 images: each listing as its command recorded it, its rows' blobs like a round's), every
latent-cache entry under <workdir>/cache/latents against the key and digest it records
(storage/latents.py; a bad one is repairable: training encodes it again), the work status files,
and what nothing needs any more: blobs no manifest file in the workdir references, files under
blobs/ that are not blobs, temp files of interrupted atomic writes, staging folders of commits that
never finished and round folders holding a marker but not its manifest (a torn object-store
publish, which copies the marker first).

A round folder holding a manifest but no marker is "unmarked": its marker was lost, not its data.
It is never removed by `repair`; `remark` restores the marker after checking the manifest against
the round's row in rounds.parquet, or `quarantine_round` moves the folder to quarantine.

`repair` is conservative and reversible: under the workdir lock (never while a run is writing) it
moves what is removable to `<workdir>/quarantine/<batch>/` (same relative paths), with a record
`<workdir>/quarantine/<batch>.json` of what and why; `purge` deletes the quarantine, explicitly.
It never touches a blob that any manifest file in the workdir references (committed rounds,
unmarked rounds, staged commits, unfinished rounds' work, the quarantine itself), never a committed
or unmarked manifest. While any such file cannot be read, no blob is touched (its references are
unknown). A missing or corrupt referenced blob, or a damaged manifest, is reported: nothing can
repair it here.
"""

from __future__ import annotations

import json
import posixpath
import random
import re
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from storage import schema
from storage.blobs import BlobError, blob_key, parse_blob_key
from storage.digest import DIGEST_VERSION_KEY, DigestError, content_digest, version_of
from storage.fs import is_temp_name
from storage.hashing import is_sha256_hex, sha256_hex
from storage.latents import LATENT_CACHE, EntryError, check_entry, entry_key
from storage.lock import Holder, WorkdirLock
from storage.overrides import operator
from storage.store import MARKER, PART_NAME, STAGING, Store, StoreError, derived_figures, manifest_name, now_utc
from storage.unlabeled import BANKS, Bank, read_bank
from storage.work import STATUS_FILE, RoundWork

# what can be moved to quarantine safely, and what cannot be repaired here
REPAIRABLE = ("orphan_blob", "stray_file", "temp_file", "staging", "torn_round", "bad_cache_entry")
UNREPAIRABLE = ("bad_manifest", "unmarked_round", "metrics_mismatch", "bad_reference", "missing_blob",
                "corrupt_blob", "missing_adapter", "damaged_adapter", "bad_bank", "bad_work_file")
QUARANTINE = "quarantine"
_URI_COLUMNS = tuple(f"{p}_uri" for p in schema.IMAGE_COLUMNS)
# a stray Parquet file may be of any schema version: every name an image column ever had, and a
# bank listing's (whose blobs are kept when the listing cannot be trusted but still parses)
_ANY_URI_COLUMNS = tuple(dict.fromkeys(_URI_COLUMNS + tuple(f"{p}_uri" for p in schema.V1_PANEL_NAMES[1:])
                                       + tuple(b.uri for b in BANKS)))
_WORK_STATUS = re.compile(rf"^work/round=(\d+)/{re.escape(STATUS_FILE)}$")
_SKIP = (".prefect", QUARANTINE)  # ephemeral Prefect state (SQLite); what repair set aside: not judged


class FsckError(StoreError):
    """An fsck action that is refused (re-marking a round that does not check out, ...)."""


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
    blobs_referenced: int = 0  # distinct referenced blobs, each checked to be present
    sample_seed: int | None = None  # with --sample: the seed that chose the blobs hashed (to repeat it)
    kept_for_work: int = 0  # blobs only uncommitted manifests (work, staging, unmarked, quarantine) reference
    adapters_checked: int = 0  # committed rounds' adapters hashed against their markers
    bank_rows: int = 0  # rows of the banks' listings checked (their blobs are among blobs_checked)
    cache_entries: int = 0  # latent-cache entries checked against the key and digest they record
    unchecked: list[str] = field(default_factory=list)  # what has no record to check against (not damage)
    findings: list[Finding] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # paths moved to quarantine by --repair
    quarantine: str | None = None  # where --repair moved them (relative to the workdir)
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


def _lock(store: Store, command: str, on_takeover) -> WorkdirLock:
    return WorkdirLock(store.loc, command, on_takeover=on_takeover)


def _collect_references(report: FsckReport, refs: dict, table: pa.Table, r: int, round_dir: str) -> None:
    """Every blob key round r's rows reference, into `refs` (key -> where it is referenced). One
    column check proves every key is its sha's (~5 ms per 100k rows) and then only distinct keys are
    kept (which triplet is looked up if a blob turns out bad); when it fails, the rows are walked one
    by one so that each bad reference is named, and the good ones are still kept."""
    try:
        schema.check_uris(table)
    except schema.SchemaError:
        ids = table.column("triplet_id").to_pylist()
        for col in _URI_COLUMNS:
            sha_col = col.removesuffix("_uri") + "_sha256"
            for tid, key, sha in zip(ids, table.column(col).to_pylist(), table.column(sha_col).to_pylist()):
                if key is None and sha is None:
                    continue
                where = f"round {r}, triplet {tid}, {col}"
                if not (isinstance(sha, str) and is_sha256_hex(sha)) or key != blob_key(sha):
                    report.findings.append(Finding("bad_reference", round_dir,
                                                   f"{where}: {key!r} is not the blob key of sha256 {sha!r}", False))
                    continue
                refs.setdefault(key, where)
        return
    for col in _URI_COLUMNS:
        for key in pc.unique(table.column(col).drop_null()).to_pylist():
            refs.setdefault(key, (r, col))


def fsck(store: Store, repair: bool = False, on_takeover: Callable[[Holder, str], None] | None = None,
         sample: int | None = None, seed: int | None = None) -> FsckReport:
    """Check `store`; with `repair`, hold the workdir lock, check, and move what is repairable to
    a new quarantine batch (with a record of what and why). With `sample`, only that many of the
    referenced blobs, chosen at random (`seed`, drawn and reported when not given), are re-hashed;
    every one is still checked to be present, and everything else is checked in full."""
    if not repair:
        return _check(store, sample, seed)
    with _lock(store, "layerboot fsck --repair", on_takeover):
        report = _check(store, sample, seed)
        report.lock = None  # that is us
        chosen = [f for f in report.findings if f.repairable]
        if chosen:
            report.quarantine = _quarantine(store, chosen, "layerboot fsck --repair")
            report.repaired = [f.path for f in chosen]
        return report


def _quarantine(store: Store, findings: list[Finding], command: str) -> str:
    """Move each finding's path into a new batch folder under quarantine/, keeping its relative
    path, and write the batch's record. Returns the batch folder (relative to the workdir)."""
    loc = store.loc
    batch = f"{QUARANTINE}/{now_utc():%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    record = {"batch": batch, "at": now_utc().isoformat(), "by": operator(), "command": command,
              "restore": f"move each path from {batch}/ back to the same path in the workdir",
              "items": [{"path": f.path, "kind": f.kind, "detail": f.detail} for f in findings]}
    loc.write_atomic(loc.join(batch + ".json"), json.dumps(record, indent=1).encode())  # the record first
    for f in findings:
        src = loc.join(f.path)
        if loc.exists(src):
            loc.move(src, loc.join(batch, f.path))
            loc.prune_empty_dirs(posixpath.dirname(src), stop=loc.root)
    return batch


def purge(store: Store, on_takeover: Callable[[Holder, str], None] | None = None) -> list[str]:
    """Delete the quarantine (every batch and its record), under the workdir lock. Returns the
    batches deleted."""
    with _lock(store, "layerboot fsck --purge", on_takeover):
        root = store.loc.join(QUARANTINE)
        if not store.loc.exists(root):
            return []
        names = sorted(posixpath.basename(p.rstrip("/")) for p in store.loc.fs.ls(root, detail=False))
        store.loc.remove_tree(root)
        return [f"{QUARANTINE}/{n}" for n in names if not n.endswith(".json")]


def remark(store: Store, r: int, on_takeover: Callable[[Holder, str], None] | None = None) -> dict[str, Any]:
    """Give unmarked round r its commit marker back, rebuilt from the round's row in
    metrics/rounds.parquet, once its one manifest checks out against that row (file hash, name,
    row count, content digest, every figure). Refused (FsckError) otherwise. Returns the marker."""
    with _lock(store, f"layerboot fsck --remark {r}", on_takeover):
        if r not in store.unmarked_rounds():
            raise FsckError(f"round {r} is not unmarked in {store.uri} (nothing to re-mark)")
        recorded = store.recorded_metrics()
        rows = [m for m in (recorded.to_pylist() if recorded is not None else []) if m["round"] == r]
        if not rows:
            raise FsckError(f"round {r}: metrics/rounds.parquet has no row for it, so its manifest cannot be "
                            f"checked; `layerboot fsck --quarantine-round {r}` sets it aside")
        row = rows[0]
        files = store.round_files(r)
        if len(files) != 1 or not PART_NAME.match(files[0]):
            raise FsckError(f"round {r}: its folder must hold exactly one part-<digest>.parquet file, holds {files}")
        name = files[0]
        data = store.loc.read_bytes(posixpath.join(store.round_dir(r), name))
        if sha256_hex(data) != row["manifest_sha256"]:
            raise FsckError(f"round {r}: manifest {name} does not hash to the manifest_sha256 rounds.parquet records")
        stored, table = schema.load_manifest(data)
        try:  # rounds.parquet records no definition: the digest's form tells it (storage/digest.py)
            version = version_of(row["content_digest"])
        except DigestError as e:
            raise FsckError(f"round {r}: rounds.parquet's {e}") from None
        digest = content_digest(stored, version)
        if digest != row["content_digest"] or name != manifest_name(digest):
            raise FsckError(f"round {r}: the content of manifest {name} does not match rounds.parquet")
        figures = derived_figures(table)
        figures.pop("train_accepted")
        wrong = sorted(k for k, v in figures.items() if row[k] != v)
        if wrong:
            raise FsckError(f"round {r}: rounds.parquet's {', '.join(wrong)} do not follow from manifest {name}")
        marker = {k: v for k, v in row.items()}
        marker["committed_at"] = row["committed_at"].isoformat()
        for k, v in marker.items():
            if isinstance(v, list) and all(isinstance(x, tuple) for x in v):  # Arrow maps: (key, value) pairs
                marker[k] = dict(v)
        marker |= {"file": name, "schema_version": schema.SCHEMA_VERSION, "manifest_bytes": len(data),
                   DIGEST_VERSION_KEY: version}
        store.loc.write_atomic(posixpath.join(store.round_dir(r), MARKER), json.dumps(marker, indent=1).encode())
        store.verify_round(r)  # the round as readers now see it
        return marker


def quarantine_round(store: Store, r: int, on_takeover: Callable[[Holder, str], None] | None = None) -> str:
    """Move unmarked round r's folder to a quarantine batch (reversible). Returns the batch."""
    with _lock(store, f"layerboot fsck --quarantine-round {r}", on_takeover):
        if r not in store.unmarked_rounds():
            raise FsckError(f"round {r} is not unmarked in {store.uri}: only an unmarked round can be set aside")
        path = posixpath.relpath(store.round_dir(r), store.loc.root)
        return _quarantine(store, [Finding("unmarked_round", path, "set aside by --quarantine-round", False)],
                           f"layerboot fsck --quarantine-round {r}")


def _manifest_refs(loc, path: str) -> set[str]:
    """Blob keys a Parquet file with manifest columns references (raises when unreadable)."""
    table = schema.read_parquet(loc.read_bytes(path))
    keys: set[str] = set()
    for col in _ANY_URI_COLUMNS:
        if col in table.column_names:
            keys.update(k for k in table.column(col).to_pylist() if k)
    return keys


def _check_bank(store: Store, report: FsckReport, bank: Bank, refs: dict, verified: set[str],
                unreadable: list[str]) -> None:
    """A bank's listing (storage/unlabeled.py): its rows' blobs into `refs`; a listing that cannot
    be trusted is a finding, and its file joins `unreadable` (step 3 still reads its references,
    if it parses: they are kept, not orphans)."""
    listing = store.loc.join(*bank.listing)
    rel = posixpath.relpath(listing, store.loc.root)
    try:
        checked: list[bool] = []
        for i, row in enumerate(read_bank(store, bank, checked)):
            refs.setdefault(row[bank.uri], f"{rel}, row {i} ({str(row['name'])[:80]!r})")
            report.bank_rows += 1
        if checked == [False]:
            report.unchecked.append(f"{rel}: written before its hash was recorded")
        verified.add(listing)  # its references are in `refs`
    except StoreError as e:
        report.findings.append(Finding("bad_bank", rel, str(e), False))
        unreadable.append(rel)


def _check(store: Store, sample: int | None = None, seed: int | None = None) -> FsckReport:
    loc = store.loc
    report = FsckReport(workdir=store.uri)
    rel = lambda path: posixpath.relpath(path, loc.root)  # noqa: E731
    holder = WorkdirLock(loc, "fsck").holder()
    report.lock = asdict(holder) if holder else None

    # 1. committed rounds: marker proven against manifest, then row references
    refs: dict[str, str | tuple[int, str]] = {}  # blob key -> where first referenced (round, column: found lazily)
    verified: set[str] = set()  # manifest files of committed rounds that verified
    unreadable: list[str] = []  # rounds and files whose references are unknown: no blob is touched
    recorded = None
    try:
        recorded = {m["round"]: m for m in (store.recorded_metrics() or pa.table({"round": []})).to_pylist()}
    except StoreError as e:
        report.findings.append(Finding("metrics_mismatch", rel(store.metrics_path()), str(e), False))
    for r in store.committed_rounds():
        report.rounds.append(r)
        try:
            marker, table = store.verify_round(r, level="full")
        except StoreError as e:  # whatever is wrong with it, it is reported, never removed
            report.findings.append(Finding("bad_manifest", rel(store.round_dir(r)), str(e), False))
            unreadable.append(f"round {r}")  # what it references is not known: its manifest may lie
            continue
        if recorded is not None and r in recorded and any(
                recorded[r][k] != marker.get(k) for k in ("rows", "content_digest", "manifest_sha256", "pool_size")):
            report.findings.append(Finding("metrics_mismatch", rel(store.round_dir(r)), f"round {r}: its marker and "
                                           "its row in metrics/rounds.parquet disagree", False))
        verified.add(posixpath.join(store.round_dir(r), marker["file"]))
        report.rows += table.num_rows
        _collect_references(report, refs, table, r, rel(store.round_dir(r)))
        if marker.get("adapter_uri") and not loc.exists(store.adapter_dir(r)):
            report.findings.append(Finding("missing_adapter", rel(store.adapter_dir(r)),
                                           f"round {r}: its marker names an adapter that is not there", False))
        elif marker.get("adapter_uri"):
            try:
                if store.verify_adapter(r) is None:
                    report.unchecked.append(f"{rel(store.adapter_dir(r))}: committed without file hashes (an older "
                                            "layerboot, or a marker restored by --remark)")
                else:
                    report.adapters_checked += 1
            except StoreError as e:
                report.findings.append(Finding("damaged_adapter", rel(store.adapter_dir(r)), str(e), False))
    for r in store.unmarked_rounds():
        report.findings.append(Finding("unmarked_round", rel(store.round_dir(r)),
                                       f"round {r}: a manifest without its commit marker (kept); `layerboot fsck "
                                       f"--remark {r}` restores the marker after checking it against rounds.parquet, "
                                       f"`--quarantine-round {r}` sets the folder aside", False))

    # 1b. the banks (unlabeled composites, layers): the listing its command recorded, each row a
    #     blob key of its hash
    for bank in BANKS:
        _check_bank(store, report, bank, refs, verified, unreadable)

    def where_of(key: str) -> str:
        where = refs[key]
        if isinstance(where, str):
            return where
        r, col = where
        rows = store.read_round(r, validate=False, columns=["triplet_id", col])
        return f"round {r}, triplet {rows.filter(pc.equal(rows[col], key))['triplet_id'][0].as_py()}, {col}"

    # 2. referenced blobs: present (in one listing of the workdir, not a request per blob) and
    #    hashing to their address (all of them, or a random sample)
    all_files = sorted(loc.fs.find(loc.root)) if loc.exists(loc.root) else []
    listed = set(all_files)
    keys = sorted(refs)
    report.blobs_referenced = len(keys)
    present = []
    for key in keys:
        if loc.join(key) in listed:
            present.append(key)
        else:
            report.findings.append(Finding("missing_blob", key, f"referenced by {where_of(key)}", False))
    if sample is not None and sample < len(present):  # a sample of the blobs that are there
        report.sample_seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
        present = sorted(random.Random(report.sample_seed).sample(present, sample))
    for key in present:
        path = loc.join(key)
        actual = sha256_hex(loc.read_bytes(path))
        report.blobs_checked += 1
        if actual != parse_blob_key(key):
            report.findings.append(Finding("corrupt_blob", key, f"hashes to {actual}; referenced by {where_of(key)}",
                                           False))

    # 3. every other manifest file of the workdir (damaged or unmarked rounds, staged commits,
    #    unfinished rounds' work, the quarantine): the blobs it references are never touched
    other_refs: set[str] = set()
    for path in all_files:
        key = rel(path)
        if (not key.endswith(".parquet") or key == rel(store.metrics_path()) or key.split("/", 1)[0] == ".prefect"
                or is_temp_name(posixpath.basename(path)) or path in verified):
            continue  # (a verified committed manifest: its references are in `refs`)
        try:
            other_refs |= _manifest_refs(loc, path)
        except Exception as e:  # noqa: BLE001 - unreadable: its references are unknown
            if key.startswith("work/"):
                report.findings.append(Finding("bad_work_file", key, f"unreadable work shard: {e}", False))
            unreadable.append(key)

    # 3b. the work status files `status` and `resume` trust
    for path in all_files:
        key = rel(path)
        if (m := _WORK_STATUS.match(key)) is not None:
            try:
                RoundWork(store, int(m.group(1))).status()
            except StoreError as e:
                report.findings.append(Finding("bad_work_file", key, str(e), False))

    # 3c. the latent cache: each entry must record its own key and the digest of its tensors
    cache = loc.join(*LATENT_CACHE)
    for path in all_files:
        key = rel(path)
        if not key.startswith(rel(cache) + "/") or is_temp_name(posixpath.basename(path)):
            continue
        name = posixpath.relpath(path, cache)
        try:
            if (entry := entry_key(name)) is None:
                raise EntryError("not laid out like a cache entry (<vae>/<size>/<ab>/<key>.safetensors)")
            check_entry(loc.read_bytes(path), entry)
            report.cache_entries += 1
        except EntryError as e:
            report.findings.append(Finding("bad_cache_entry", key, f"{e}; training encodes it again", True))

    # 4. every file of the workdir: blobs nothing references, strays, temp files
    for path in all_files:
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
        if key in other_refs:
            report.kept_for_work += 1
            continue
        if unreadable:
            report.findings.append(Finding("orphan_blob", key, "referenced by no committed round; kept while "
                                           f"{', '.join(unreadable)} cannot be read or trusted", False))
        else:
            report.findings.append(Finding("orphan_blob", key, "referenced by no manifest in the workdir", True))

    # 5. commits that never finished: staging folders, round folders without their manifest
    manifests = loc.join("manifests")
    staging = posixpath.join(manifests, STAGING)
    if loc.exists(staging):
        for entry in sorted(loc.fs.ls(staging, detail=False)):
            report.findings.append(Finding("staging", rel(entry.rstrip("/")), "a commit that never finished", True))
    if loc.exists(manifests):
        for entry in sorted(loc.fs.ls(manifests, detail=False)):
            entry = entry.rstrip("/")
            name = posixpath.basename(entry)
            if not name.startswith("round=") or not loc.fs.isdir(entry):
                continue
            names = [posixpath.relpath(p, entry) for p in loc.fs.find(entry)]
            if not any(n.endswith(".parquet") for n in names):  # empty, or a torn object-store publish
                report.findings.append(Finding("torn_round", rel(entry), "round folder without a manifest: not "
                                               "committed", True))
    return report
