"""The one place that owns the on-disk schemas: round manifests and the rounds-metrics table.

Bump SCHEMA_VERSION whenever a column changes; it is written into every Parquet file's metadata
and every commit marker, so readers can tell which layout they are looking at, and `upgrade_*`
turns an older layout into today's (workdirs written by schema 1 stay readable).

Storage knows no layer task: a triplet's panels are the columns `composite`, `layer1`, `layer2`
(grid order, left to right); the task's own names for them (e.g. composite, logo, object) travel
beside the rows, in the Parquet metadata (PANEL_NAMES_KEY) and in rounds.parquet's `panels`.

Versions: 1 (the logo/object task only: `logo_*`, `object_*` columns, one eval_*/baseline_* column
per metric); 2 (generic layer columns, panel names recorded, eval metrics as one map).
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.blobs import blob_keys
from storage.hashing import SHA256_PATTERN

SCHEMA_VERSION = 2
SCHEMA_VERSION_KEY = b"layerboot.schema_version"
PANEL_NAMES_KEY = b"layerboot.panels"  # JSON list: the layer task's names of PANELS, in order

SOURCES = ("seed", "user", "generated", "composed", "cycle")
CANDIDATE_SOURCES = ("generated", "composed")  # rows the judge admits or rejects: a round's candidates
SPLITS = ("train", "test")
PANELS = ("composite", "layer1", "layer2")  # a triplet's panel columns, composite first: the grid's order
IMAGE_COLUMNS = (*PANELS, "footprint")  # every column pair `<name>_uri` + `<name>_sha256`
V1_PANEL_NAMES = ("composite", "logo", "object")  # schema 1 stored the one task it had under its own names

_scores = pa.map_(pa.string(), pa.float64())  # criterion -> score in [0, 1]
_reasons = pa.map_(pa.string(), pa.string())  # criterion -> short reason

# One row per triplet. Image columns hold blob keys relative to the workdir
# (`blobs/ab/ab...png`) plus the sha256 the blob must hash to.
def _manifest_schema(panels: tuple[str, ...], version: int) -> pa.Schema:
    images = [pa.field(f"{p}_{kind}", pa.string(), nullable=False) for p in panels for kind in ("uri", "sha256")]
    return pa.schema(
        [
            pa.field("triplet_id", pa.string(), nullable=False),  # stable hash of content + lineage
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("round", pa.int32(), nullable=False),
            pa.field("source", pa.string(), nullable=False),  # one of SOURCES
            pa.field("split", pa.string(), nullable=False),  # one of SPLITS
            pa.field("prompt", pa.string(), nullable=False),
            *images,
            # where a layer changes the composite (the logo's); known for synthetic triplets, used by evaluation
            pa.field("footprint_uri", pa.string()),
            pa.field("footprint_sha256", pa.string()),
            pa.field("panel_size", pa.int32(), nullable=False),
            pa.field("judge_scores", _scores),
            pa.field("judge_reasons", _reasons),
            pa.field("accepted", pa.bool_(), nullable=False),
            pa.field("reject_reason", pa.string()),
            pa.field("cycle_scores", _scores),
            pa.field("parent_id", pa.string()),  # the triplet a cycle triplet was made from
            pa.field("adapter_version", pa.string()),  # adapter that produced the row (null for seeds)
            pa.field("seed", pa.int64(), nullable=False),
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ],
        metadata={SCHEMA_VERSION_KEY: str(version).encode()},
    )


MANIFEST_SCHEMA = _manifest_schema(PANELS, SCHEMA_VERSION)
MANIFEST_SCHEMA_V1 = _manifest_schema(V1_PANEL_NAMES, 1)

# One row per committed round: the dashboard contract. The first block is derived from the
# manifest at commit time; the second is what the orchestrator measured (ROUND_EXTRA_FIELDS).
ROUNDS_SCHEMA = pa.schema(
    [
        pa.field("round", pa.int32(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("committed_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("panels", pa.list_(pa.string()), nullable=False),  # the layer task's names of PANELS
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("candidates", pa.int64(), nullable=False),  # candidates judged (CANDIDATE_SOURCES)
        pa.field("accepted", pa.int64(), nullable=False),  # candidates accepted
        pa.field("selection_rate", pa.float64()),  # accepted / candidates; null without candidates
        pa.field("cycle_added", pa.int64(), nullable=False),
        pa.field("seeds_added", pa.int64(), nullable=False),  # seed + user triplets
        pa.field("test_rows", pa.int64(), nullable=False),
        pa.field("pool_size", pa.int64(), nullable=False),  # training pool after this round
        pa.field("adapter_uri", pa.string()),
        pa.field("manifest_sha256", pa.string(), nullable=False),
        pa.field("content_digest", pa.string(), nullable=False),
        # what the orchestrator measured (null for rounds committed without it, e.g. seeding)
        pa.field("flow_run_id", pa.string()),
        pa.field("criterion_pass_rates", _scores),  # criterion -> share of candidates passing it
        pa.field("selection_rate_by_source", _scores),  # candidate source -> its own selection rate
        pa.field("train_pool", pa.int64()),  # triplets the round's adapter was trained on
        pa.field("rec_loss", pa.float64()),  # L_rec at the end of the round's training
        pa.field("cyc_loss", pa.float64()),  # L_cyc at the end of the round's training
        pa.field("rec_loss_by_task", _scores),  # task -> L_rec over the training's last 200 steps
        # held-out metric -> value: the model's as `<panel>_<metric>` (e.g. logo_psnr), the trivial
        # baseline's as `baseline_<panel>_<metric>`, and the baseline through the codec (what a
        # perfect model's decodes are compared with) as `baseline_codec_<panel>_<metric>`
        pa.field("eval_metrics", _scores),
        pa.field("judge_thresholds", _scores),  # criterion -> threshold the round's judge used
        pa.field("stage_seconds", _scores),  # stage -> wall seconds
    ],
    metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode()},
)


ROUND_EXTRA_FIELDS = tuple(ROUNDS_SCHEMA.names[ROUNDS_SCHEMA.names.index("flow_run_id"):])


class SchemaError(ValueError):
    """Rows that do not fit a schema; the message names the column."""


def to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema = MANIFEST_SCHEMA) -> pa.Table:
    """Build a validated table from dict rows: unknown or missing columns, nulls in required
    columns, unknown sources/splits and bad hashes are refused with the column named."""
    rows = list(rows)
    names = set(schema.names)
    for i, row in enumerate(rows):
        unknown = set(row) - names
        if unknown:
            raise SchemaError(f"row {i}: unknown column(s) {sorted(unknown)}")
    try:
        table = pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise SchemaError(f"rows do not fit the schema: {e}") from None
    validate(table, schema)
    return table


def validate(table: pa.Table, schema: pa.Schema = MANIFEST_SCHEMA) -> None:
    if not table.schema.equals(schema, check_metadata=False):
        raise SchemaError(f"table schema differs from the expected one:\n{table.schema}\nexpected:\n{schema}")
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise SchemaError(f"column {field.name!r} is required but has nulls")
    if schema is MANIFEST_SCHEMA:
        _check_values(table, "source", SOURCES)
        _check_values(table, "split", SPLITS)
        # the common case proven on the bytes (every sha 64 hex digits, every uri its blob key); else
        # the exact checks, which name the first bad row
        if not all(_keys_of_hashes(table.column(f"{p}_uri"), table.column(f"{p}_sha256")) for p in IMAGE_COLUMNS):
            for panel in PANELS:  # vectorised: a 1M-row manifest validates in well under a second
                column = table.column(f"{panel}_sha256")
                bad = pc.invert(pc.match_substring_regex(column, SHA256_PATTERN))
                if pc.any(bad).as_py():
                    first = column.filter(bad)[0].as_py()
                    raise SchemaError(f"column '{panel}_sha256' has a malformed sha256: {first!r}")
            check_uris(table)
        ids = table.column("triplet_id")
        if pc.count_distinct(ids).as_py() != len(ids):
            raise SchemaError("column 'triplet_id' has duplicates")


def check_uris(table: pa.Table) -> None:
    """Image columns hold exactly the blob key of their sha256: never a path of their own choosing
    (`../`, `/etc/...`, another bucket), so a manifest can only ever point inside blobs/."""
    for panel in IMAGE_COLUMNS:
        if f"{panel}_uri" not in table.column_names:  # a projection without it: no key to point anywhere
            continue
        uris, shas = table.column(f"{panel}_uri"), table.column(f"{panel}_sha256")
        if _keys_of_hashes(uris, shas):  # the common case, proven on the bytes; else find the first bad row
            continue
        ok = pc.and_(pc.match_substring_regex(shas, SHA256_PATTERN), pc.equal(uris, blob_keys(shas)))
        both_null = pc.and_(pc.is_null(uris), pc.is_null(shas))
        bad = pc.invert(pc.or_(both_null, pc.fill_null(ok, False)))
        if pc.any(bad).as_py():
            i = pc.index(bad, True).as_py()
            raise SchemaError(f"triplet {table['triplet_id'][i]}: column '{panel}_uri' is {uris[i].as_py()!r}, not the "
                              f"blob key of its {panel}_sha256 {shas[i].as_py()!r}")


# ---- fast paths of the checks above, on the raw string buffers ----------------------------------
# Regular expressions and a built key column per row cost ~0.2 s per 100k rows; the same facts read
# off the Arrow buffers with numpy cost ~5 ms. Each fast path answers "every row is fine" or "not
# sure", never "bad": on "not sure" the exact per-row check runs and names the first bad row.
_KEY_PREFIX = np.frombuffer(b"blobs/", dtype=np.uint8)
_KEY_SUFFIX = np.frombuffer(b".png", dtype=np.uint8)


def _string_values(arr: pa.Array, width: int) -> np.ndarray | None:
    """The non-null values of a string array as an (n, width) uint8 matrix when every one of them is
    `width` bytes long and every null is empty, else None."""
    if not pa.types.is_string(arr.type):
        return None
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[arr.offset:arr.offset + len(arr) + 1]
    lengths = np.diff(offsets)
    if arr.null_count:
        valid = np.asarray(arr.is_valid())
        if lengths[~valid].any():
            return None
        lengths = lengths[valid]
    if len(lengths) == 0:
        return np.zeros((0, width), dtype=np.uint8)
    if (lengths != width).any():
        return None
    data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0]:offsets[-1]] if data_buf is not None else np.zeros(0, np.uint8)
    return data.reshape(-1, width)


def _all_hex(values: np.ndarray) -> bool:
    """Every byte is 0-9 or a-f (uint8 arithmetic wraps around: one compare per range)."""
    return bool(((values - np.uint8(48) < 10) | (values - np.uint8(97) < 6)).all())


def _keys_of_hashes(uris: pa.ChunkedArray, shas: pa.ChunkedArray) -> bool:
    """Every row's uri is `blobs/<sha[:2]>/<sha>.png` of its 64-hex sha, or both are null (True),
    or not sure (False)."""
    if uris.num_chunks != 1 or shas.num_chunks != 1:
        uris, shas = uris.combine_chunks(), shas.combine_chunks()
    else:
        uris, shas = uris.chunk(0), shas.chunk(0)
    if uris.null_count != shas.null_count or (
            uris.null_count and not np.array_equal(np.asarray(uris.is_valid()), np.asarray(shas.is_valid()))):
        return False
    sha = _string_values(shas, 64)
    key = _string_values(uris, 77)
    if sha is None or key is None or not _all_hex(sha):
        return False
    expected = np.empty_like(key)
    expected[:, :6], expected[:, 6:8], expected[:, 8] = _KEY_PREFIX, sha[:, :2], ord("/")
    expected[:, 9:73], expected[:, 73:] = sha, _KEY_SUFFIX
    return np.array_equal(expected, key)


def check_panel_names(names: Any) -> tuple[str, ...]:
    """A layer task's names of the three panels: distinct lower-case words, composite first."""
    names = tuple(names)
    if (len(names) != len(PANELS) or len(set(names)) != len(names) or names[0] != "composite"
            or not all(isinstance(n, str) and re.fullmatch(r"[a-z][a-z0-9_]{0,31}", n) for n in names)):
        raise SchemaError(f"panel names must be three distinct lower-case words, 'composite' first; got {list(names)}")
    return names


def with_panel_names(table: pa.Table, names: Any) -> pa.Table:
    """The table with its task's panel names (and the schema version) in its metadata."""
    meta = {SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode(),
            PANEL_NAMES_KEY: json.dumps(list(check_panel_names(names))).encode()}
    return table.replace_schema_metadata(meta)


def panel_names_of(schema: pa.Schema) -> tuple[str, ...] | None:
    value = (schema.metadata or {}).get(PANEL_NAMES_KEY)
    return tuple(json.loads(value)) if value is not None else None


def read_parquet(data: bytes, schema: pa.Schema | None = None, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file's table, read from a copy of `data` in Arrow's own memory. Read from Python's
    bytes, an Arrow worker thread could drop the last reference to them while the interpreter
    exits, take the GIL, and abort the process ("terminate called without an active exception",
    exit 134, in ~10% of `layerboot status` runs; seen in a core dump, pyarrow 26)."""
    sink = pa.BufferOutputStream()
    sink.write(data)
    return pq.read_table(pa.BufferReader(sink.getvalue()), schema=schema, columns=columns)


def load_manifest(data: bytes, columns: list[str] | None = None) -> tuple[pa.Table | None, pa.Table]:
    """A manifest file's rows twice: as stored (cast to the schema of the version that wrote it,
    which is what its content digest was computed over) and in today's layout with its panel
    names in the metadata. Raises SchemaError for a file newer than this code or not a manifest.
    With `columns` (today's names), only those are decoded and returned, and `stored` is None."""
    if columns is not None:
        sink = pa.BufferOutputStream()
        sink.write(data)
        stored_schema = pq.read_schema(pa.BufferReader(sink.getvalue()))
        if (schema_version_of(stored_schema) or 1) == SCHEMA_VERSION:
            raw = read_parquet(data, columns=list(columns))
            names = panel_names_of(raw.schema)
            target = pa.schema([MANIFEST_SCHEMA.field(c) for c in columns], metadata=MANIFEST_SCHEMA.metadata)
            return None, with_panel_names(raw.cast(target), names if names is not None else PANELS)
        return None, load_manifest(data)[1].select(list(columns))  # an older layout: decoded whole, renamed
    raw = read_parquet(data)
    version = schema_version_of(raw.schema) or 1
    if version == SCHEMA_VERSION:
        names = panel_names_of(raw.schema)
        stored = with_panel_names(raw.cast(MANIFEST_SCHEMA), names if names is not None else PANELS)
        return stored, stored
    if version == 1:
        stored = raw.cast(MANIFEST_SCHEMA_V1)
        renamed = stored.rename_columns([_v1_column(n) for n in stored.column_names])
        return stored, with_panel_names(renamed.cast(MANIFEST_SCHEMA), V1_PANEL_NAMES)
    raise SchemaError(f"written by schema version {version}; this layerboot reads versions 1 to {SCHEMA_VERSION} "
                      "(upgrade layerboot)")


def _v1_column(name: str) -> str:
    for new, old in zip(PANELS, V1_PANEL_NAMES):
        if name.startswith(f"{old}_"):
            return new + name[len(old):]
    return name


def upgrade_round(row: dict[str, Any], version: int | None) -> dict[str, Any]:
    """A commit marker or rounds.parquet row of an older schema in today's layout."""
    if (version or 1) >= SCHEMA_VERSION:
        return row
    row = dict(row)
    metrics = {k.removeprefix("eval_"): row.pop(k) for k in list(row) if k.startswith(("eval_", "baseline_"))}
    row["eval_metrics"] = {k: v for k, v in metrics.items() if v is not None} or None
    row["panels"] = list(V1_PANEL_NAMES)
    return row


def upgrade_rounds_table(table: pa.Table) -> pa.Table:
    """rounds.parquet as read from disk, in today's layout (rebuilt row by row when older)."""
    version = schema_version_of(table.schema)
    if (version or 1) >= SCHEMA_VERSION:
        for field in ROUNDS_SCHEMA:  # a nullable column added since the file was written reads as nulls
            if field.name not in table.column_names and field.nullable:
                table = table.append_column(field, pa.nulls(table.num_rows, field.type))
        return table.select(ROUNDS_SCHEMA.names).cast(ROUNDS_SCHEMA)
    return to_table([upgrade_round(row, version) for row in table.to_pylist()], ROUNDS_SCHEMA)


def panel_uris(row: dict[str, Any]) -> tuple[str, ...]:
    """A manifest row's panel blob keys, in PANELS order."""
    return tuple(row[f"{p}_uri"] for p in PANELS)


def _check_values(table: pa.Table, column: str, allowed: tuple[str, ...]) -> None:
    bad = set(pc.unique(table.column(column)).to_pylist()) - set(allowed)
    if bad:
        raise SchemaError(f"column {column!r} has value(s) {sorted(bad)}; allowed: {list(allowed)}")


def empty(schema: pa.Schema = MANIFEST_SCHEMA) -> pa.Table:
    return schema.empty_table()


def schema_version_of(schema: pa.Schema) -> int | None:
    meta = schema.metadata or {}
    value = meta.get(SCHEMA_VERSION_KEY)
    return int(value) if value is not None else None
