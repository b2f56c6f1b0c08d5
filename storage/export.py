"""`layerboot export`: a workdir's dataset as of round R, in the formats people train from (Hugging
Face `datasets` Parquet shards, or WebDataset tar shards), with a dataset card.

    <out>/data/<split>-NNNNN-of-MMMMM.parquet   --format hf: panels as datasets' Image feature (PNG bytes)
    <out>/data/<split>-NNNNN-of-MMMMM.tar       --format webdataset: <id>.<panel>.png ..., <id>.json per triplet
    <out>/README.md                             the dataset card, with datasets' YAML header: written last
    <out>/.layerboot-export.json                what this folder is the export of (hidden: loaders skip it)

Splits: `train` is the training pool after round R with the operator's overrides (`Store.pool`:
exactly what round R+1 trains on); `test` the held-out split; `rejected` the training rows of
rounds <= R that are not in the pool, with their reasons (`Store.rejected`). Rows keep the manifest's
columns, the panels under the task's own names (composite, logo, object).

Exact and repeatable: every image is its blob's bytes, hash-checked as it is read (a mismatch is an
error naming the blob). Rows are written in the order they were committed, round by round, into
shards closed once their file reaches the shard size, so the same export writes the same files. A
shard is written under a hidden name (streamed to disk locally; one PUT from memory on
an object store, so memory holds at most one shard) and renamed to its final name once the split's
shard count is known; the card comes last. An export that stopped half-way leaves only hidden files
besides its record; run again, it writes everything anew. A refused export (round not committed or
damaged, an output folder holding anything but an earlier try of the same export) writes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import posixpath
import tarfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from storage import schema
from storage.blobs import BlobError
from storage.fs import Location, is_temp_name
from storage.hashing import stable_id
from storage.images import decode_image
from storage.overrides import Override, in_effect, load_overrides
from storage.store import Store, StoreError
from storage.target import read_target

EXPORT_VERSION = 1  # bump when the same rows and options would give other files
FORMATS = {"hf": "parquet", "webdataset": "tar"}  # --format -> shard file extension
SPLITS = {"train": ("train",), "test": ("test",), "all": ("train", "test")}  # --split -> the splits written
REJECTED = "rejected"
DEFAULT_SHARD_BYTES = 500 * 10**6  # as datasets' push_to_hub (max_shard_size="500MB") and WebDataset's usual shards
RECORD = ".layerboot-export.json"
CARD = "README.md"
DATA = "data"
ROW_GROUP_ROWS = 100  # as datasets writes image datasets (config.PARQUET_ROW_GROUP_SIZE_FOR_IMAGE_DATASETS)
# --dedup: imagehash's perceptual hash (DCT of the 32x32 greyscale composite, 8x8 low frequencies:
# 64 bits); a composite within this many bits of an earlier kept row's is a near-copy
DEDUP_HASH_SIZE = 8
DEDUP_HASH_BITS = DEDUP_HASH_SIZE**2
DEDUP_MAX_DISTANCE = 4
FOOTPRINT = "footprint"
JSON_COLUMNS = ("judge_scores", "judge_reasons", "cycle_scores")  # criterion -> value maps
# every column but the images, in the order the rows show them; `<image>_sha256` follow
META_COLUMNS = ("triplet_id", "prompt", "round", "source", "split", "accepted", "reject_reason", *JSON_COLUMNS,
                "override_action", "override_reason", "parent_id", "adapter_version", "run_id", "seed", "panel_size",
                "created_at")


class ExportError(StoreError):
    """An export that is refused (bad options, an output folder holding something else)."""


@dataclass(frozen=True)
class ExportOptions:
    round: int
    format: str = "hf"
    split: str = "train"
    include_rejected: bool = False
    shard_bytes: int = DEFAULT_SHARD_BYTES
    dedup: bool = False
    license: str = "unknown"


@dataclass(frozen=True)
class RunFacts:
    """What made the rows, from the run's config (the workdir records only its hash): the card names them."""

    domain: str
    base: str
    judge: str
    config_hash: str


@dataclass
class SplitResult:
    name: str
    rows: int = 0
    shards: list[str] = field(default_factory=list)  # final paths, relative to the output folder
    bytes: int = 0
    dropped: int = 0  # near-copies left out (--dedup)
    by_round_source: Counter = field(default_factory=Counter)  # (round, source) -> rows
    by_adapter: Counter = field(default_factory=Counter)  # adapter_version (None: seeds) -> rows


@dataclass
class ExportResult:
    out: str
    splits: list[SplitResult]
    card: str


@dataclass(frozen=True)
class ExportPlan:
    """Everything an export writes, read and checked before anything is written."""

    options: ExportOptions
    facts: RunFacts | None
    panels: tuple[str, ...]  # the task's names of schema.PANELS
    markers: list[dict[str, Any]]  # commit markers of rounds 0..R, each proven against its manifest
    parts: dict[str, list[Callable[[], pa.Table]]]  # split -> readers of its rows, in export order (a round each)
    rows: dict[str, int]  # split -> rows before --dedup
    overrides: dict[str, Override]  # triplet id -> the override in effect (rounds <= R)
    fingerprint: str

    @property
    def run_id(self) -> str:
        return self.markers[0]["run_id"]

    @property
    def images(self) -> tuple[str, ...]:
        return (*self.panels, FOOTPRINT)

    @property
    def extension(self) -> str:
        return FORMATS[self.options.format]


def plan_export(store: Store, options: ExportOptions, facts: RunFacts | None = None) -> ExportPlan:
    """Read and check what `export` would write. Refuses (StoreError) a round that is not committed,
    a damaged round at or before it (with `verify_round`'s message, which sends to `layerboot fsck`),
    an unmarked one, and facts of another config than the run's."""
    if options.format not in FORMATS:
        raise ExportError(f"format must be one of {sorted(FORMATS)}, got {options.format!r}")
    if options.split not in SPLITS:
        raise ExportError(f"split must be one of {sorted(SPLITS)}, got {options.split!r}")
    if options.shard_bytes < 1:
        raise ExportError(f"shard size must be at least 1 byte, got {options.shard_bytes}")
    r = options.round
    if r not in store.committed_rounds():
        raise StoreError(f"round {r} is not committed in {store.uri}; `layerboot status` lists the committed rounds")
    if unmarked := [u for u in store.unmarked_rounds() if u <= r]:
        raise StoreError(f"round(s) {unmarked} in {store.uri} hold a manifest without a commit marker; "
                         "`layerboot fsck` says how to re-mark them before exporting")
    markers = [store.verify_round(q, level="marker")[0] for q in range(r + 1)]
    target = read_target(store)
    if facts is not None and target is not None and target["config_hash"] != facts.config_hash:
        raise ExportError(f"the config given (hash {facts.config_hash}) is not the one the run started with "
                          f"(hash {target['config_hash']}): the card would name the wrong base and judge; pass "
                          "the run's config")
    splits = SPLITS[options.split] + ((REJECTED,) if options.include_rejected else ())

    def readers(split: str) -> list[Callable[[], pa.Table]]:
        """A round at a time (memory holds one round's rows, not the pool's), in Store.pool's order."""
        if split == "test":
            return [store.test_split]
        return [functools.partial(store.train_rows, [q], in_pool=split == "train") for q in range(r + 1)]

    parts = {name: readers(name) for name in splits}
    rows = {name: sum(read().num_rows for read in reads) for name, reads in parts.items()}
    overrides = {tid: o for tid, o in in_effect(load_overrides(store.loc)).items() if o.round <= r}
    fingerprint = stable_id(EXPORT_VERSION, json.dumps(asdict(options), sort_keys=True),
                            json.dumps(asdict(facts) if facts else None, sort_keys=True),
                            *(m["content_digest"] for m in markers), *sorted(o.id for o in overrides.values()))
    return ExportPlan(options, facts, tuple(markers[0]["panels"]), markers, parts, rows, overrides, fingerprint)


def export(store: Store, out: str, plan: ExportPlan) -> ExportResult:
    """Write the dataset `plan_export` planned to folder `out` (path or fsspec URI): shards, then the
    card. Refused, writing nothing, when `out` holds anything but an earlier try of this same export."""
    from tqdm.auto import tqdm

    options = plan.options
    target = Location.parse(out)
    existed = target.exists(target.root)  # an empty folder the user made stays, also on failure
    fresh = _claim(target, plan)
    _remove_leftovers(target)  # of a try that stopped: everything is written anew
    created: list[str] = []  # what a failure removes again: hidden shards, and the record of a fresh folder
    try:
        if fresh:
            record = {"fingerprint": plan.fingerprint, "round": options.round, "run_id": plan.run_id,
                      "options": asdict(options), "export_version": EXPORT_VERSION}
            created.append(target.join(RECORD))
            target.write_atomic(target.join(RECORD), json.dumps(record, indent=1, sort_keys=True).encode())
        total = sum(plan.rows.values())
        with tqdm(total=total, desc=f"export round {options.round}", unit="row", disable=None) as bar:
            written = [(name, _write_split(store, plan, name, target, created, bar.update)) for name in plan.parts]
        results = [_publish(target, plan, name, hidden, result) for name, (hidden, result) in written]
        target.write_atomic(target.join(CARD), dataset_card(plan, results).encode())
    except BaseException:
        for path in created:
            if target.exists(path):
                target.fs.rm_file(path)
        if fresh:
            target.prune_empty_dirs(target.join(DATA), stop=target.root if existed else posixpath.dirname(target.root))
        raise
    return ExportResult(target.uri(target.root), results, target.uri(target.join(CARD)))


def _claim(target: Location, plan: ExportPlan) -> bool:
    """Whether `target` is fresh (absent, empty, or holding only temp files of a write that stopped).
    An earlier try of this export (its record says so) may be written over; anything else is
    refused before anything is written."""
    shown = target.root if target.is_local else target.uri(target.root)
    if not target.exists(target.root):
        return True
    if not target.fs.isdir(target.root):
        raise ExportError(f"--out {shown} is a file, not a folder")
    if all(is_temp_name(posixpath.basename(p)) for p in target.fs.find(target.root)):
        return True
    record = None
    if target.exists(target.join(RECORD)):
        try:
            record = json.loads(target.read_bytes(target.join(RECORD)))
        except ValueError:
            pass
    if isinstance(record, dict) and record.get("fingerprint") == plan.fingerprint:
        return False
    what = ("files that are not a layerboot export" if not isinstance(record, dict) else
            f"another export (round {record.get('round')} of run {record.get('run_id')!r}, other rows or options: "
            f"{json.dumps(record.get('options'), sort_keys=True)})")
    raise ExportError(f"--out {shown} exists and holds {what}; an export never writes over it: choose another "
                      "--out or remove that folder")


def _remove_leftovers(target: Location) -> None:
    """What a try that stopped left: temp files of its writes, and shards in data/ not yet given their
    final names (hidden). Nothing else: the folder may hold the user's own hidden files (.git)."""
    for folder, leftover in ((target.root, is_temp_name), (target.join(DATA), lambda name: name.startswith("."))):
        if target.exists(folder):
            for path in target.fs.ls(folder, detail=False):
                if leftover(posixpath.basename(path.rstrip("/"))) and not target.fs.isdir(path):
                    target.fs.rm_file(path)


# ---- rows -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """One triplet as exported: its columns (JSON-ready but for created_at) and its images' bytes."""

    key: str  # the triplet id
    meta: dict[str, Any]
    images: dict[str, bytes | None]  # task panel name (and footprint) -> PNG bytes

    @property
    def nbytes(self) -> int:
        """Its images and its metadata: what it adds to a Parquet shard, before compression."""
        return sum(len(b) for b in self.images.values() if b) + len(self.meta_json())

    def meta_json(self) -> bytes:
        return json.dumps(self.meta, sort_keys=True, default=datetime.isoformat).encode()


def samples(store: Store, plan: ExportPlan, split: str) -> Iterator[Sample]:
    """A split's rows with their images read from the blob store (hash-checked), in order."""
    columns = dict(zip(plan.images, (*schema.PANELS, FOOTPRINT)))  # task name -> manifest column
    batches = (b for read in plan.parts[split] for b in read().to_batches(max_chunksize=ROW_GROUP_ROWS))
    for batch in batches:
        for row in batch.to_pylist():
            tid = row["triplet_id"]
            override = plan.overrides.get(tid)
            meta = {k: row.get(k) for k in META_COLUMNS}
            meta.update({k: dict(row[k]) if row[k] is not None else None for k in JSON_COLUMNS},
                        override_action=override.action if override else None,
                        override_reason=override.reason if override else None)
            images = {}
            for name, column in columns.items():
                key = row[f"{column}_uri"]
                meta[f"{name}_sha256"] = row[f"{column}_sha256"]
                try:
                    images[name] = store.blobs.get(key) if key is not None else None
                except BlobError as e:
                    raise BlobError(f"{e} (triplet {tid}, {name}); `layerboot fsck` lists every damaged blob") from None
            yield Sample(tid, meta, images)


class NearCopies:
    """Perceptual hashes of the composites kept so far, indexed so that a lookup is cheap at 100k rows:
    two 64-bit hashes within DEDUP_MAX_DISTANCE bits agree exactly on at least one of
    DEDUP_MAX_DISTANCE + 1 slices of the bits (pigeonhole), so only rows sharing a slice are compared."""

    def __init__(self) -> None:
        n = DEDUP_MAX_DISTANCE + 1
        self._slices = [(i * DEDUP_HASH_BITS // n, (i + 1) * DEDUP_HASH_BITS // n) for i in range(n)]
        self._index: list[dict[int, list[int]]] = [{} for _ in self._slices]

    def _parts(self, value: int) -> list[int]:
        return [(value >> lo) & ((1 << (hi - lo)) - 1) for lo, hi in self._slices]

    def seen(self, png: bytes, name: str) -> bool:
        """Whether the image is a near-copy of one kept before; if not, it is kept."""
        import imagehash

        value = int(str(imagehash.phash(decode_image(png, name), hash_size=DEDUP_HASH_SIZE)), 16)
        parts = self._parts(value)
        for index, part in zip(self._index, parts):
            if any((value ^ other).bit_count() <= DEDUP_MAX_DISTANCE for other in index.get(part, ())):
                return True
        for index, part in zip(self._index, parts):
            index.setdefault(part, []).append(value)
        return False


# ---- shards -----------------------------------------------------------------------------------
def hf_features(images: tuple[str, ...]):
    """The rows' `datasets.Features`: panels as Image (PNG bytes embedded), the criterion maps as Json."""
    from datasets import Features, Image, Json, Value

    types = {"round": Value("int32"), "accepted": Value("bool"), "seed": Value("int64"), "panel_size": Value("int32"),
             "created_at": Value("timestamp[us, tz=UTC]"), **{k: Json() for k in JSON_COLUMNS}}
    columns = {"triplet_id": Value("string"), **{name: Image() for name in images}}
    columns.update({k: types.get(k, Value("string")) for k in META_COLUMNS[1:]})
    columns.update({f"{name}_sha256": Value("string") for name in images})
    return Features(columns)


class ParquetShard:
    """Rows as datasets writes them (`Features.arrow_schema`, so `load_dataset` needs no card to
    know the Image and Json columns), a row group per ROW_GROUP_ROWS rows."""

    def __init__(self, file: BinaryIO, plan: ExportPlan):
        self.schema = hf_features(plan.images).arrow_schema
        self.writer = pq.ParquetWriter(file, self.schema)
        self.file, self.rows, self.pending = file, [], 0

    def size(self) -> int:
        """Bytes written so far, and those of the rows not yet in a row group."""
        return self.file.tell() + self.pending

    def add(self, sample: Sample) -> None:
        row = dict(sample.meta)
        row.update({k: json.dumps(row[k], sort_keys=True) if row[k] is not None else None for k in JSON_COLUMNS})
        row.update({name: {"bytes": data, "path": f"{sample.key}.{name}.png"} if data is not None else None
                    for name, data in sample.images.items()})
        self.rows.append(row)
        self.pending += sample.nbytes
        if len(self.rows) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows, self.pending = [], 0

    def close(self) -> None:
        self._flush()
        self.writer.close()


class TarShard:
    """WebDataset's layout: each triplet's files one after the other, named `<id>.<panel>.png` and
    `<id>.json` (its columns). Written with the standard library's tarfile: member times are the
    rows' created_at and owners are fixed, so the same rows give the same bytes (webdataset's own
    TarWriter stamps the current time)."""

    def __init__(self, file: BinaryIO, plan: ExportPlan):
        self.file = file
        self.tar = tarfile.open(fileobj=file, mode="w", format=tarfile.USTAR_FORMAT)

    def size(self) -> int:
        return self.file.tell()

    def add(self, sample: Sample) -> None:
        members = [(f"{name}.png", data) for name, data in sample.images.items() if data is not None]
        for suffix, data in [*members, ("json", sample.meta_json())]:
            info = tarfile.TarInfo(f"{sample.key}.{suffix}")
            info.size, info.mode, info.mtime = len(data), 0o644, int(sample.meta["created_at"].timestamp())
            self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self.tar.close()


SHARD_WRITERS = {"hf": ParquetShard, "webdataset": TarShard}


class SplitShards:
    """A split's shards, written one at a time under hidden names (`.<split>-NNNNN.<ext>`); a shard
    is closed once its file reaches the shard size."""

    def __init__(self, target: Location, plan: ExportPlan, split: str, created: list[str]):
        self.target, self.plan, self.split, self.created = target, plan, split, created
        self.hidden: list[str] = []  # finished shards
        self.bytes = 0  # their file sizes
        self._open: contextlib.ExitStack | None = None  # the shard being written, if any
        self._shard = self._file = None

    def add(self, sample: Sample) -> None:
        if self._open is None:
            path = self.target.join(DATA, f".{self.split}-{len(self.hidden):05d}.{self.plan.extension}")
            self.created.append(path)
            self._open = contextlib.ExitStack()
            self._file = self._open.enter_context(self.target.writer(path))
            self._shard = SHARD_WRITERS[self.plan.options.format](self._file, self.plan)
        self._shard.add(sample)
        if self._shard.size() >= self.plan.options.shard_bytes:
            self.close()

    def close(self) -> None:
        """Finish the shard being written (if any): it appears under its hidden name."""
        if self._open is None:
            return
        self._shard.close()
        self.bytes += self._file.tell()
        done, self._open = self._open, None
        done.close()
        self.hidden.append(self.created[-1])

    def abort(self) -> None:
        """Drop the shard being written: its temp file goes (the finished ones are in `created`)."""
        if self._open is not None:
            done, self._open = self._open, None
            done.__exit__(RuntimeError, RuntimeError("export stopped"), None)


def _write_split(store: Store, plan: ExportPlan, split: str, target: Location, created: list[str],
                 progress) -> tuple[list[str], SplitResult]:
    """Write a split's shards under hidden names; returns their paths and what they hold."""
    result = SplitResult(split)
    near = NearCopies() if plan.options.dedup and split == "train" else None
    shards = SplitShards(target, plan, split, created)
    try:
        for sample in samples(store, plan, split):
            progress(1)
            if near is not None and near.seen(sample.images[plan.panels[0]], f"triplet {sample.key} composite"):
                result.dropped += 1
                continue
            shards.add(sample)
            result.rows += 1
            result.by_round_source[(sample.meta["round"], sample.meta["source"])] += 1
            result.by_adapter[sample.meta["adapter_version"]] += 1
        shards.close()
    except BaseException:
        shards.abort()
        raise
    result.bytes = shards.bytes
    return shards.hidden, result


def _publish(target: Location, plan: ExportPlan, split: str, hidden: list[str], result: SplitResult) -> SplitResult:
    """Give a split's hidden shards their final names, now that their count is known."""
    for i, path in enumerate(hidden):
        name = posixpath.join(DATA, f"{split}-{i:05d}-of-{len(hidden):05d}.{plan.extension}")
        target.move(path, target.join(name))
        result.shards.append(name)
    return result


# ---- the card ---------------------------------------------------------------------------------
def dataset_card(plan: ExportPlan, results: list[SplitResult]) -> str:
    """README.md: datasets' YAML header (configs, features, split sizes, licence, provenance), then
    the task, the counts, the judge per round, the models, near-duplicates, provenance and loading."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    o, r, ext = plan.options, plan.options.round, plan.extension
    kept = [s for s in results if s.rows]  # a split without rows has no files for a config to name
    splits = SplitDict()
    for s in kept:
        splits.add(SplitInfo(s.name, num_bytes=s.bytes, num_examples=s.rows))
    provenance = {"export": plan.fingerprint, "export_version": EXPORT_VERSION, "round": r, "run_id": plan.run_id,
                  "config_hash": plan.facts.config_hash if plan.facts else None,
                  "rounds": [{"round": m["round"], "content_digest": m["content_digest"],
                              "manifest_sha256": m["manifest_sha256"]} for m in plan.markers],
                  "overrides_in_effect": len(plan.overrides)}
    data = DatasetCardData(
        license=o.license, pretty_name=f"{plan.run_id}: layered triplets after round {r}",
        task_categories=["image-to-image"], tags=["layer-decomposition", "layerboot", *plan.panels[1:]],
        configs=[{"config_name": "default",
                  "data_files": [{"split": s.name, "path": f"{DATA}/{s.name}-*.{ext}"} for s in kept]}],
        layerboot=provenance)
    info = DatasetInfo(features=hf_features(plan.images) if o.format == "hf" else None, splits=splits)
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)

    layers = " + ".join(f"`{p}`" for p in plan.panels[1:])
    task = f" (task `{plan.facts.domain}`)" if plan.facts else ""
    lines = [
        "---", data.to_yaml(), "---", "",
        f"# {plan.run_id}: layered triplets after round {r}", "",
        f"Layer decomposition: each row is a composite image `{plan.panels[0]}` and its layers {layers}{task}, "
        f"panel order `{' | '.join(plan.panels)}`, plus `footprint` where the row has one (where a layer changes "
        "the composite). Made by layerboot's data bootstrapping and exported with `layerboot export` "
        f"(format `{o.format}`). Rows keep the workdir manifest's columns; `<panel>_sha256` is the sha256 "
        "of the embedded PNG.", "",
        "## Splits", "",
        "| split | rows | shards | bytes | what |", "|---|---|---|---|---|",
        *(f"| `{s.name}` | {s.rows} | {len(s.shards)} | {s.bytes} | {_SPLIT_MEANING[s.name].format(r=r, r1=r + 1)} |"
          for s in results), "",
        "Rows by round and source:", "",
        "| split | round | source | rows |", "|---|---|---|---|",
        *(f"| `{s.name}` | {q} | {src} | {n} |" for s in results for (q, src), n in sorted(s.by_round_source.items())),
        "",
        "## Selection and the judge per round", "",
        f"Judge: {plan.facts.judge if plan.facts else 'not given (export with --config)'}. A candidate is accepted "
        "when every criterion reaches its threshold; overrides are an operator's later decision "
        "(`override_action`, `override_reason`).", "",
        "| round | candidates | accepted | selection rate | pool after | judge thresholds | pass rates |",
        "|---|---|---|---|---|---|---|",
        *(f"| {m['round']} | {m['candidates']} | {m['accepted']} | {_rate(m.get('selection_rate'))} | "
          f"{m['pool_size']} | {_pairs(m.get('judge_thresholds'))} | {_pairs(m.get('criterion_pass_rates'))} |"
          for m in plan.markers), "",
        "## Models", "",
        f"Base: `{plan.facts.base if plan.facts else 'not given (export with --config)'}`. Generated and cycle "
        "rows name the adapter that made them (`adapter_version`; the adapter of round NN is `adapters/round=NN/` "
        "in the workdir); seed and user rows have none.", "",
        "| split | adapter_version | rows |", "|---|---|---|",
        *(f"| `{s.name}` | {a or '- (seed / user)'} | {n} |" for s in results
          for a, n in sorted(s.by_adapter.items(), key=lambda x: x[0] or "")), "",
        "## Near-duplicates", "",
        (f"`--dedup`: {sum(s.dropped for s in results)} training rows dropped whose composite is a near-copy "
         f"of an earlier row's: perceptual hash (imagehash.phash, {DEDUP_HASH_BITS} bits) at most "
         f"{DEDUP_MAX_DISTANCE} bits apart. Rows are compared in export order (round by round)."
         if o.dedup else "Not removed (`layerboot export --dedup` drops near-copies)."), "",
        "## Provenance", "",
        f"Run `{plan.run_id}`, config hash `{provenance['config_hash'] or 'not given'}`, "
        f"{len(plan.overrides)} operator override(s) in effect, export `{plan.fingerprint}`. Rounds "
        "(commit markers, each proven against its manifest; the same in the YAML header under `layerboot`):", "",
        "| round | committed at | content digest | manifest sha256 |", "|---|---|---|---|",
        *(f"| {m['round']} | {m['committed_at']} | `{m['content_digest']}` | `{m['manifest_sha256']}` |"
          for m in plan.markers), "",
        "## Licence", "",
        f"`{o.license}`" + (" (not given: set it with `layerboot export --license ID`)" if o.license == "unknown"
                            else "") + ".", "",
        "## Use", "",
        "```python", *_loading(plan, kept), "```", "",
    ]
    return "\n".join(lines)


_SPLIT_MEANING = {
    "train": "the training pool after round {r}, with overrides: what round {r1} trains on",
    "test": "the held-out test split",
    REJECTED: "training rows of rounds <= {r} not in the pool, with `reject_reason` and the judge's reasons",
}


def _loading(plan: ExportPlan, kept: list[SplitResult]) -> list[str]:
    """Three lines that load the first split, from this folder."""
    first = kept[0] if kept else SplitResult("train")
    layer = plan.panels[1]
    if plan.options.format == "hf":
        return ["from datasets import load_dataset",
                'ds = load_dataset("path/to/this/folder")  # or load_dataset("parquet", data_dir=...)',
                f'ds["{first.name}"][0]["{layer}"]  # a PIL image']
    n = len(first.shards)
    shards = f"data/{first.name}-{{00000..{max(n - 1, 0):05d}}}-of-{n:05d}.tar"
    return ["import webdataset as wds",
            f'ds = wds.WebDataset("{shards}", shardshuffle=False).decode("pil")',
            f'next(iter(ds))["{layer}.png"]  # a PIL image']


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _pairs(values: dict[str, float] | None) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted((values or {}).items())) or "-"
