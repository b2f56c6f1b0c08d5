"""The bad-input corpus: one test per case.

A user error ends in one line `error: ...` on stderr naming the input and what is wrong with it,
exit code 2, no traceback, and the workdir byte-for-byte unchanged (every file and its sha256).
A bad judge output never stops a round: that item alone is rejected (kept in the manifest as a
quarantined row) with a reason, and the other items score exactly as if judged alone.

Unusual but valid images (16-bit, CMYK, palette, alpha) are not errors: they are converted to RGB
on import (last test), with pinned pixel values.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import Callable

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from models.judge import Criterion, Judge, Scored
from models.domains.logo_object.world import make_triplet
from storage import schema
from storage.imports import MAX_FILE_BYTES
from storage.images import MAX_PIXELS
from storage.schema import SchemaError
from storage.store import Store
from tests.conftest import MICRO_YAML, make_row, moto_server
from tests.test_fsck import rewrite_manifest

runner = CliRunner()
SIZE = 32


# ----------------------------------------------------------------------------- helpers
def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int, bit_depth: int = 8, colour: int = 2) -> bytes:
    """A PNG that claims width x height and holds no pixel data (what a header bomb looks like)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def png_rgb16(size: int, rgb16: tuple[int, int, int]) -> bytes:
    """A real 48-bit (16 bits per channel) RGB PNG, which Pillow cannot write itself."""
    row = b"\x00" + struct.pack(">HHH", *rgb16) * size
    ihdr = struct.pack(">IIBBBBB", size, size, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(row * size))
            + png_chunk(b"IEND", b""))


def snapshot(root: Path) -> dict[str, str]:
    """Every file under the workdir (lock and Prefect state included) with its sha256."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def write_triplet(folder: Path, seed: int = 1) -> None:
    t = make_triplet(seed, SIZE)
    folder.mkdir(parents=True)
    for name in ("composite", "logo", "object"):
        getattr(t, name).save(folder / f"{name}.png")
    (folder / "prompt.txt").write_text(t.prompt)


def assert_user_error(res, *needles: str) -> str:
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "micro.yaml"
    path.write_text(MICRO_YAML.format(base="models/tiny_base"))  # seeding never loads the model
    return path


@pytest.fixture(scope="module")
def seeded(config_path: Path, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("seeded") / "w"
    res = runner.invoke(app, ["seed", "-c", str(config_path), "-w", str(work)])
    assert res.exit_code == 0, res.output
    return work


@pytest.fixture
def workdir(seeded: Path, tmp_path: Path) -> Path:
    """A copy of a seeded workdir (round 0 committed: 12 triplets, 48 blobs) to be left unchanged."""
    work = tmp_path / "w"
    shutil.copytree(seeded, work)
    return work


# ----------------------------------------------------------------------------- import cases
# Each case damages a valid import folder `src` (one triplet `t0`) and returns what the one error
# line must contain. `outside` is a folder next to `src`, outside the import.
def _replace(path: Path, data: bytes, suffix: str | None = None) -> Path:
    path.unlink()
    target = path.with_suffix(suffix) if suffix else path
    target.write_bytes(data)
    return target


def _png_bad_crc(src: Path, outside: Path) -> list[str]:
    p = src / "t0" / "logo.png"
    data = bytearray(p.read_bytes())
    data[data.index(b"IDAT") + 8] ^= 0xFF
    p.write_bytes(bytes(data))
    return [f"{p}: cannot decode image (broken data stream"]


def _jpeg(src: Path) -> tuple[Path, bytes]:
    return src / "t0" / "logo.png", encode(Image.open(src / "t0" / "logo.png").convert("RGB"), "JPEG")


def _jpeg_bad_header(src: Path, outside: Path) -> list[str]:
    p, data = _jpeg(src)
    k = data.index(b"\xff\xc0")  # start-of-frame marker destroyed
    target = _replace(p, data[: k + 1] + b"\x00" + data[k + 2 :], ".jpg")
    return [f"{target}: cannot decode image (not a recognised image format)"]


def _jpeg_huge_header(src: Path, outside: Path) -> list[str]:
    p, data = _jpeg(src)
    k = data.index(b"\xff\xc0")
    target = _replace(p, data[: k + 5] + struct.pack(">HH", 60000, 60000) + data[k + 9 :], ".jpg")
    return [f"{target}: too many pixels (3600000000, limit {MAX_PIXELS}): refusing a possible decompression bomb"]


def _bomb(src: Path, outside: Path) -> list[str]:
    side = int(math.isqrt(MAX_PIXELS)) + 64  # a real image, tiny on disk, 17 M pixels decoded
    data = encode(Image.new("1", (side, side)))
    assert len(data) < 10_000
    p = src / "t0" / "object.png"
    p.write_bytes(data)
    return [f"{p}: too many pixels ({side * side}, limit {MAX_PIXELS}): refusing a possible decompression bomb"]


def _symlink(src: Path, outside: Path, relative: bool) -> list[str]:
    secret = outside / "elsewhere.png"
    shutil.copy(src / "t0" / "logo.png", secret)
    p = src / "t0" / "logo.png"
    p.unlink()
    os.symlink(os.path.relpath(secret, p.parent) if relative else secret, p)
    return [f"{p}: points outside the import folder ({secret})"]


def _folder_symlink(src: Path, outside: Path) -> list[str]:
    write_triplet(outside / "theirs", seed=5)
    os.symlink(outside / "theirs", src / "t1")
    return [f"{src / 't1'}: points outside the import folder ({outside / 'theirs'})"]


def _prompt_symlink(src: Path, outside: Path) -> list[str]:
    (outside / "credentials").write_text("aws_secret_access_key = not-for-the-manifest")
    p = src / "t0" / "prompt.txt"
    p.unlink()
    os.symlink(outside / "credentials", p)
    return [f"{p}: points outside the import folder"]


def _oversized(src: Path, outside: Path) -> list[str]:
    p = src / "t0" / "composite.png"
    with open(p, "r+b") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    return [f"{p}: larger than {MAX_FILE_BYTES} bytes"]


def _panel(name: str, data: Callable[[Path], bytes], suffix: str | None = None, expect: str = "") -> Callable:
    def case(src: Path, outside: Path) -> list[str]:
        p = src / "t0" / f"{name}.png"
        target = _replace(p, data(p), suffix)
        return [f"{target}: {expect}"]
    return case


def _jpeg_bytes(p: Path) -> bytes:
    return encode(Image.open(p).convert("RGB"), "JPEG")


def _webp_bytes(p: Path) -> bytes:
    return encode(Image.open(p).convert("RGB"), "WEBP")


def _dir_panel(src: Path, outside: Path) -> list[str]:
    p = src / "t0" / "logo.png"
    p.unlink()
    p.mkdir()
    return [f"{p}: not a regular file"]


def _missing(src: Path, outside: Path) -> list[str]:
    (src / "t0" / "composite.png").unlink()
    return [f"{src / 't0'}/composite.*: expected exactly one image, found 0"]


def _twice(src: Path, outside: Path) -> list[str]:
    (src / "t0" / "logo.jpg").write_bytes(_jpeg_bytes(src / "t0" / "logo.png"))
    return [f"{src / 't0'}/logo.*: expected exactly one image, found 2"]


def _animated(src: Path, outside: Path) -> list[str]:
    p = src / "t0" / "logo.png"
    first = Image.open(p).convert("RGB")
    p.write_bytes(encode(first, save_all=True, append_images=[Image.new("RGB", first.size, (255, 0, 0))]))  # APNG
    return [f"{p}: an animated or multi-page image (2 frames); a panel is one still image"]


def _triplet_twice(src: Path, outside: Path) -> list[str]:
    shutil.copytree(src / "t0", src / "t1")
    return [f"{src / 't1'}: the same triplet as {src / 't0'} (identical composite, logo and object images)"]


def _prompt_not_utf8(src: Path, outside: Path) -> list[str]:
    (src / "t0" / "prompt.txt").write_bytes(b"caf\xe9 mug")  # Latin-1
    return [f"{src / 't0' / 'prompt.txt'}: not UTF-8 text (invalid continuation byte at byte 3)"]


IMPORT_CASES: dict[str, Callable[[Path, Path], list[str]]] = {
    "png-zero-byte": _panel("logo", lambda p: b"", expect="empty file"),
    "png-truncated": _panel("logo", lambda p: p.read_bytes()[:60], expect="cannot decode image"),
    "png-bad-crc": _png_bad_crc,
    "png-not-an-image": _panel("logo", lambda p: b"<html>a web page, saved as png</html>",
                               expect="cannot decode image (not a recognised image format)"),
    "jpeg-zero-byte": _panel("logo", lambda p: b"", ".jpg", "empty file"),
    "jpeg-truncated": _panel("logo", lambda p: _jpeg_bytes(p)[:300], ".jpg", "cannot decode image"),
    "jpeg-bad-header": _jpeg_bad_header,
    "webp-truncated": _panel("logo", lambda p: _webp_bytes(p)[:40], ".webp", "cannot decode image"),
    "png-decompression-bomb": _bomb,
    "png-huge-dimensions": _panel("logo", lambda p: png_header_only(100_000, 100_000),
                                  expect=f"too many pixels (10000000000, limit {MAX_PIXELS})"),
    "png-over-pixel-limit": _panel("logo", lambda p: png_header_only(4200, 4200),
                                   expect=f"too many pixels (17640000, limit {MAX_PIXELS})"),
    "jpeg-huge-dimensions": _jpeg_huge_header,
    "panel-sizes-mismatch": _panel("logo", lambda p: encode(Image.new("RGB", (48, 48))),
                                   expect="expected 32x32 pixels, got 48x48"),
    "panel-not-square": _panel("object", lambda p: encode(Image.new("RGB", (32, 48))),
                               expect="expected 32x32 pixels, got 32x48"),
    "panel-missing": _missing,
    "panel-twice": _twice,
    "panel-is-a-directory": _dir_panel,
    "panel-larger-than-limit": _oversized,
    "symlink-absolute-out-of-import": lambda s, o: _symlink(s, o, relative=False),
    "symlink-dotdot-out-of-import": lambda s, o: _symlink(s, o, relative=True),
    "folder-symlink-out-of-import": _folder_symlink,
    "prompt-symlink-out-of-import": _prompt_symlink,
    "prompt-not-utf8": _prompt_not_utf8,
    "png-animated": _animated,
    "triplet-twice": _triplet_twice,
}


@pytest.mark.parametrize("case", IMPORT_CASES, ids=list(IMPORT_CASES))
def test_bad_import(case: str, config_path: Path, workdir: Path, tmp_path: Path):
    src, outside = tmp_path / "import", tmp_path / "outside"
    outside.mkdir()
    write_triplet(src / "t0")
    needles = IMPORT_CASES[case](src, outside)
    before = snapshot(workdir)
    res = runner.invoke(app, ["seed", "-c", str(config_path), "-w", str(workdir), "--from-dir", str(src)])
    line = assert_user_error(res, *needles)
    assert line.endswith("(nothing imported)")
    assert snapshot(workdir) == before


@pytest.mark.parametrize("case", ["import-dir-missing", "import-dir-is-a-file", "import-dir-empty"])
def test_bad_import_folder(case: str, config_path: Path, workdir: Path, tmp_path: Path):
    src = tmp_path / "import"
    if case == "import-dir-is-a-file":
        src.write_text("a list of files, not a folder")
    elif case == "import-dir-empty":
        src.mkdir()
    expect = f"{src}: no triplet folders" if case == "import-dir-empty" else f"{src}: not a directory"
    before = snapshot(workdir)
    res = runner.invoke(app, ["seed", "-c", str(config_path), "-w", str(workdir), "--from-dir", str(src)])
    assert_user_error(res, expect)
    assert snapshot(workdir) == before


# ----------------------------------------------------------------------------- config cases
def _patched(**sections) -> str:
    body = yaml.safe_load(MICRO_YAML.format(base="models/tiny_base"))
    for dotted, value in sections.items():
        *path, last = dotted.split("__")
        target = body
        for p in path:
            target = target.setdefault(p, {})
        target[last] = value
    return yaml.safe_dump(body)


CRITERION = {"name": "quality", "question": "Is it sharp?"}
_MICRO = MICRO_YAML.format(base="models/tiny_base")
_DUPLICATED = _MICRO.replace("  n_test: 4\n", "  n_test: 4\n  n_seeds: 9\n")
_DUP_LINES = [i + 1 for i, line in enumerate(_DUPLICATED.splitlines()) if line.strip().startswith("n_seeds:")]
_LATIN1 = _MICRO.encode().replace(b"name: micro", b"name: caf\xe9")
_LATIN1_AT = _LATIN1.index(b"\xe9")
_LATIN1_LINE = _LATIN1[:_LATIN1_AT].count(b"\n") + 1
CONFIG_CASES: dict[str, tuple[str | None, str]] = {
    # id: (YAML text, or None for a special case; what the error must say after "<file>: ")
    "yaml-invalid": ("profile: tiny\nrun: {name: [micro\n", "invalid YAML: "),
    "yaml-empty-file": ("", "expected a mapping at the top level, got NoneType"),
    "yaml-wrong-type": (_patched(data__panel_size="large"), "data.panel_size: Input should be a valid integer"),
    "yaml-wrong-type-list": (_patched(bootstrap__candidates=[40]), "bootstrap.candidates: Input should be a valid integer"),
    "rounds-zero": (_patched(bootstrap__rounds=0), "bootstrap.rounds: Input should be greater than or equal to 1 (got 0)"),
    "rounds-negative": (_patched(bootstrap__rounds=-3), "bootstrap.rounds: Input should be greater than or equal to 1 (got -3)"),
    "threshold-nan": (_patched(judge__criteria=[CRITERION | {"threshold": float("nan")}]),
                      "judge.criteria.0.threshold: Input should be a finite number"),
    "threshold-above-one": (_patched(judge__criteria=[CRITERION | {"threshold": 1.5}]),
                            "judge.criteria.0.threshold: Input should be less than or equal to 1 (got 1.5)"),
    "unknown-profile-in-yaml": (_patched(profile="sdxl"), "profile: Input should be 'tiny' or 'flux' (got 'sdxl')"),
    "unknown-profile-name": (None, "config file not found (nor a profile: flux, intrinsic_tiny, tiny)"),
    "config-is-a-directory": (None, "not a regular file"),
    "yaml-duplicate-key": (_DUPLICATED, f"duplicate key 'n_seeds' (lines {_DUP_LINES[0]} and {_DUP_LINES[1]})"),
    "yaml-not-utf8": (None, f"not UTF-8 text (invalid continuation byte at byte {_LATIN1_AT}, line "
                            f"{_LATIN1_LINE})"),
    "count-exhausts-memory": (_patched(data__n_seeds=10**26), "data.n_seeds: at most 100000 (the round's rows and "
                              "images are held in memory) (got 100000000000000000000000000)"),
    "batch-exhausts-memory": (_patched(sample__batch_size=10**6), "sample.batch_size: at most 1024 (one batch of "
                              "images is held in memory at once) (got 1000000)"),
    "pixels-exhaust-memory": (_patched(judge__max_pixels=10**9), "judge.max_pixels: at most 16777216 (the judge's "
                              "image tokens grow with pixels) (got 1000000000)"),
}


@pytest.mark.parametrize("case", CONFIG_CASES, ids=list(CONFIG_CASES))
def test_bad_config(case: str, workdir: Path, tmp_path: Path):
    text, expect = CONFIG_CASES[case]
    if case == "unknown-profile-name":
        path = Path("flux-xl")  # not a file, not a profile
    elif case == "config-is-a-directory":
        path = tmp_path / "conf.yaml"
        path.mkdir()
    elif case == "yaml-not-utf8":
        path = tmp_path / "bad.yaml"
        path.write_bytes(_LATIN1)
    else:
        path = tmp_path / "bad.yaml"
        path.write_text(text)
    before = snapshot(workdir)
    res = runner.invoke(app, ["run", "-c", str(path), "-w", str(workdir)])
    assert_user_error(res, f"error: {path}: {expect}")
    assert snapshot(workdir) == before  # not even a lock file or Prefect state


@pytest.mark.parametrize("value", ["0", "-2"], ids=["cli-rounds-zero", "cli-rounds-negative"])
def test_bad_rounds_option(value: str, config_path: Path, workdir: Path):
    """Typer's own usage error (a short box, not our one line): still exit 2, no traceback."""
    before = snapshot(workdir)
    res = runner.invoke(app, ["run", "-c", str(config_path), "-w", str(workdir), "--rounds", value])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "Invalid value for '--rounds'" in res.output and "greater than or equal to 1" in res.output
    assert snapshot(workdir) == before


# ----------------------------------------------------------------------------- manifest and store cases
@pytest.mark.parametrize("uri", ["../../etc/passwd", "/etc/passwd", "s3://someone-elses-bucket/blobs/x.png",
                                 "blobs/00/../../../../etc/passwd.png"],
                         ids=["uri-dotdot", "uri-absolute", "uri-other-bucket", "uri-dotdot-inside-blobs"])
def test_manifest_row_with_a_foreign_uri_is_refused(uri: str, workdir: Path):
    store = Store(str(workdir))
    row = make_row(store, 1, 0, source="generated") | {"layer1_uri": uri}
    before = snapshot(workdir)
    with pytest.raises(SchemaError) as err:
        store.commit_round(1, schema.to_table([row]))
    msg = str(err.value)
    assert "\n" not in msg and msg == (f"triplet {row['triplet_id']}: column 'layer1_uri' is {uri!r}, not the blob "
                                       f"key of its layer1_sha256 {row['layer1_sha256']!r}")
    assert snapshot(workdir) == before and store.committed_rounds() == [0]


@pytest.mark.parametrize("uri", ["../../etc/passwd", "/etc/passwd"], ids=["committed-uri-dotdot", "committed-uri-absolute"])
def test_hand_edited_manifest_pointing_outside_is_a_one_line_error(uri: str, config_path: Path, workdir: Path):
    store = Store(str(workdir))
    rows = store.read_round(0).to_pylist()
    tid = rows[0]["triplet_id"]
    rows[0]["composite_uri"] = uri
    rewrite_manifest(store, 0, rows)
    before = snapshot(workdir)
    res = runner.invoke(app, ["review", "--round", "0", "-c", str(config_path), "-w", str(workdir),
                              "--out", str(workdir.parent / "sheet.png")])
    assert_user_error(res, "error: round 0: manifest part-", f"triplet {tid}: column 'composite_uri' is {uri!r}")
    assert snapshot(workdir) == before and not (workdir.parent / "sheet.png").exists()


@pytest.mark.parametrize("case", ["blob-corrupt", "blob-missing"])
def test_damaged_blob_is_a_one_line_error(case: str, config_path: Path, workdir: Path):
    store = Store(str(workdir))
    row = [r for r in store.read_round(0).to_pylist() if r["split"] == "train"][0]
    path = workdir / row["layer1_uri"]
    if case == "blob-corrupt":
        data = bytearray(path.read_bytes())
        data[50] ^= 0x01
        path.write_bytes(bytes(data))
        expect = f"error: corrupt blob {row['layer1_uri']}: content hashes to "
    else:
        path.unlink()
        expect = f"error: missing blob {row['layer1_uri']}"
    before = snapshot(workdir)
    res = runner.invoke(app, ["review", "--round", "0", "-c", str(config_path), "-w", str(workdir),
                              "--out", str(workdir.parent / "sheet.png")])
    assert_user_error(res, expect)
    assert snapshot(workdir) == before


# ----------------------------------------------------------------------------- judge garbage
class GarbageJudge(Judge):
    """A judge backend that answers well for every item except the one whose composite has red = 13."""

    kind = "garbage"

    def __init__(self, garbage: Callable[[], object], **kw):
        super().__init__([Criterion("quality", "q?", 0.5), Criterion("logo_clean", "l?", 0.5)], panel_size=8, **kw)
        self.garbage = garbage

    def score(self, batch, prompts):
        out = []
        for c, _, _ in batch:
            red = c.getpixel((0, 0))[0]
            out.append(self.garbage() if red == 13 else Scored({"quality": 0.25 + red / 400, "logo_clean": 0.9}, {}))
        if any(c.getpixel((0, 0))[0] == 13 for c, _, _ in batch) and self.garbage is EXTRA:
            return out + [Scored({"quality": 1.0, "logo_clean": 1.0}, {})]  # one result too many
        return out

    def explain(self, batch, prompts, failed):
        return None if self.garbage is EXPLAIN_NONE else [{n: f"explained {n}" for n in names} for names in failed]


def EXTRA():  # noqa: N802 - a marker: the batch gets one result too many
    return Scored({"quality": 0.9, "logo_clean": 0.9}, {})


def EXPLAIN_NONE():  # noqa: N802 - a marker: explain() returns garbage; the item's score 0.2 fails on its own
    return Scored({"quality": 0.2, "logo_clean": 0.9}, {})


JUDGE_CASES: dict[str, tuple[Callable[[], object], str]] = {
    "judge-out-of-range-high": (lambda: Scored({"quality": 7.0, "logo_clean": 0.9}, {}),
                                "quality: out-of-range score (7, expected 0..1) from the judge"),
    "judge-out-of-range-negative": (lambda: Scored({"quality": -0.5, "logo_clean": 0.9}, {}),
                                    "quality: out-of-range score (-0.5, expected 0..1) from the judge"),
    "judge-string-score": (lambda: Scored({"quality": "0.9", "logo_clean": 0.9}, {}),
                           "quality: non-numeric score ('0.9') from the judge"),
    "judge-bool-score": (lambda: Scored({"quality": True, "logo_clean": 0.9}, {}),
                         "quality: non-numeric score (True) from the judge"),
    "judge-missing-criterion": (lambda: Scored({"logo_clean": 0.9}, {}), "quality: missing score from the judge"),
    "judge-nan-everywhere": (lambda: Scored({"quality": math.nan, "logo_clean": -math.inf}, {}),
                             "quality: non-finite score (nan) from the judge; logo_clean: non-finite score (-inf)"),
    "judge-returns-none": (lambda: None, "judge returned garbage for this item (NoneType)"),
    "judge-scores-not-a-mapping": (lambda: Scored([0.9, 0.9], {}),  # type: ignore[arg-type]
                                   "judge returned garbage for this item (scores of type list)"),
    "judge-reasons-not-a-mapping": (lambda: Scored({"quality": 0.1, "logo_clean": 0.9}, "bad"),  # type: ignore[arg-type]
                                    "quality: explained quality"),
    "judge-wrong-length": (EXTRA, "judge failed on this item: RuntimeError: judge returned 2 results for 1 items"),
    "judge-explain-returns-garbage": (EXPLAIN_NONE, "quality: score 0.20"),
}


def _panels(red: int):
    return (Image.new("RGB", (8, 8), (red, 0, 0)), Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8)))


@pytest.mark.parametrize("case", JUDGE_CASES, ids=list(JUDGE_CASES))
def test_judge_garbage_quarantines_only_that_item(case: str):
    garbage, reason = JUDGE_CASES[case]
    judge = GarbageJudge(garbage, batch_size=8)
    reds = [100, 13, 200, 160]
    out = judge.judge([_panels(v) for v in reds])
    alone = [GarbageJudge(garbage).judge([_panels(v)])[0] for v in (100, 200, 160)]
    assert [out[0], out[2], out[3]] == alone  # the rest of the batch is untouched
    assert all(j.accepted for j in alone)
    bad = out[1]
    assert not bad.accepted and bad.reject_reason.startswith(reason), bad.reject_reason
    assert bad.scores["quality"] <= 0.2  # never a pass


# ----------------------------------------------------------------------------- valid, converted
CONVERTED = {
    "png-16bit-grey": (lambda: encode(Image.new("I;16", (SIZE, SIZE), 32896)), (128, 128, 128)),
    "png-16bit-rgb": (lambda: png_rgb16(SIZE, (65535, 32896, 0)), (255, 128, 0)),
    "jpeg-cmyk": (lambda: encode(Image.new("CMYK", (SIZE, SIZE), (0, 255, 255, 0)), "JPEG", quality=100), (255, 0, 0)),
    "png-palette": (lambda: encode(Image.new("RGB", (SIZE, SIZE), (0, 128, 255)).convert("P", palette=Image.ADAPTIVE)),
                    (0, 128, 255)),
    "png-palette-transparent": (lambda: encode(Image.new("P", (SIZE, SIZE), 0), transparency=0), (255, 255, 255)),
    "png-rgba-half-transparent": (lambda: encode(Image.new("RGBA", (SIZE, SIZE), (0, 0, 255, 128))), (127, 127, 255)),
    "png-la": (lambda: encode(Image.new("LA", (SIZE, SIZE), (0, 0))), (255, 255, 255)),
}


@pytest.mark.parametrize("case", CONVERTED, ids=list(CONVERTED))
def test_unusual_but_valid_images_are_converted_on_import(case: str, config_path: Path, tmp_path: Path):
    make, expected = CONVERTED[case]
    src = tmp_path / "import"
    write_triplet(src / "t0")
    suffix = ".jpg" if case.startswith("jpeg") else ".png"
    _replace(src / "t0" / "logo.png", make(), suffix)
    work = tmp_path / "w"
    res = runner.invoke(app, ["seed", "-c", str(config_path), "-w", str(work), "--from-dir", str(src), "--n-test", "0"])
    assert res.exit_code == 0, res.output
    store = Store(str(work))
    (row,) = store.read_round(0).to_pylist()
    logo = store.read_image(row["layer1_uri"], size=SIZE)
    assert logo.mode == "RGB" and logo.getpixel((5, 5)) == pytest.approx(expected, abs=2)


# ----------------------------------------------------------------------------- workdir, environment, store cases
# Each case prepares `workdir` (a copy of a seeded one) or a path next to it and returns the command
# line and what its one error line must contain. The workdir is snapshotted after the case prepared
# it: the refused command must leave every file as it was, and create nothing (`absent` paths).
def _marker(work: Path) -> Path:
    return work / "manifests" / "round=00" / "_COMMITTED.json"


def _edit_marker(work: Path, **changes) -> None:
    import json

    body = json.loads(_marker(work).read_text()) | changes
    _marker(work).write_text(json.dumps(body))


def _part(work: Path) -> Path:
    (part,) = (work / "manifests" / "round=00").glob("part-*.parquet")
    return part


def _errno(code: int, under: Path, monkeypatch, after: int = 0) -> None:
    """Make every write under `under` fail with `code` (after `after` successful blob writes)."""
    from storage.fs import Location

    real_makedirs, real_write = os.makedirs, Location.write_atomic
    written = []

    def makedirs(name, *a, **kw):
        if str(name).startswith(str(under)) and not after:
            raise OSError(code, os.strerror(code), str(name))
        return real_makedirs(name, *a, **kw)

    def write_atomic(self, path, data):
        if str(path).startswith(str(under)):
            if len(written) >= after:
                raise OSError(code, os.strerror(code), str(path))
            written.append(path)
        return real_write(self, path, data)

    monkeypatch.setattr(os, "makedirs", makedirs)
    monkeypatch.setattr(Location, "write_atomic", write_atomic)


def _case_missing(command: list[str]) -> Callable:
    def case(work: Path, cfg: Path, tmp: Path, monkeypatch):
        missing = tmp / "mistyped"
        return [*command, "-c", str(cfg), "-w", str(missing)], [f"error: workdir {missing} does not exist"], [missing]
    return case


def _case_file(command: list[str]) -> Callable:
    def case(work: Path, cfg: Path, tmp: Path, monkeypatch):
        target = tmp / "a-file"
        target.write_text("not a workdir")
        return [*command, "-c", str(cfg), "-w", str(target)], [f"error: workdir {target} is not a directory"], []
    return case


def _case_env_errno(code: int) -> Callable:
    def case(work: Path, cfg: Path, tmp: Path, monkeypatch):
        _errno(code, work, monkeypatch)
        return ["seed", "--n", "3", "-c", str(cfg), "-w", str(work)], [f"error: {work}/locks: {os.strerror(code)}"], []
    return case


def _case_disk_full(work: Path, cfg: Path, tmp: Path, monkeypatch):
    new = tmp / "new-run"
    _errno(28, new, monkeypatch, after=5)  # ENOSPC after 5 blobs: they are removed again
    return ["seed", "-c", str(cfg), "-w", str(new)], ["error: ", "/blobs/", ": No space left on device"], [new]


def _case_seed_committed(work: Path, cfg: Path, tmp: Path, monkeypatch):
    return (["seed", "--n", "3", "-c", str(cfg), "-w", str(work)],
            ["error: round 0 is already committed in", "with different content", "rounds are immutable"], [])


def _case_duplicate_import_new_path(work: Path, cfg: Path, tmp: Path, monkeypatch):
    src, new = tmp / "import", tmp / "new-run"
    write_triplet(src / "a")
    shutil.copytree(src / "a", src / "b")
    return (["seed", "-c", str(cfg), "-w", str(new), "--from-dir", str(src)],
            [f"error: {src / 'b'}: the same triplet as {src / 'a'}", "(nothing imported)"], [new])


def _case_out_dir(command: str) -> Callable:
    def case(work: Path, cfg: Path, tmp: Path, monkeypatch):
        out = tmp / "out-dir"
        out.mkdir()
        extra = ["--round", "0"] if command == "review" else []
        return [command, *extra, "-c", str(cfg), "-w", str(work), "--out", str(out)], [f"error: {out}: Is a directory"], []
    return case


def _case_decompose_dir(work: Path, cfg: Path, tmp: Path, monkeypatch):
    folder = tmp / "photos"
    folder.mkdir()
    return (["decompose", str(folder), "--adapter", str(tmp / "adapter"), "--out", str(tmp / "layers"), "-c", str(cfg)],
            [f"error: {folder}: not a regular file"], [tmp / "layers"])


def _case_model_base_missing(work: Path, cfg: Path, tmp: Path, monkeypatch):
    bad = tmp / "cfg.yaml"
    bad.write_text(MICRO_YAML.format(base="/nonexistent/flux-fill"))
    return (["run", "-c", str(bad), "-w", str(work)],
            ["error: model.base: local folder /nonexistent/flux-fill does not exist (a hub id is org/name)"], [])


def _case_marker_truncated(work: Path, cfg: Path, tmp: Path, monkeypatch):
    _marker(work).write_bytes(_marker(work).read_bytes()[:40])
    return (["review", "--round", "0", "-c", str(cfg), "-w", str(work), "--out", str(tmp / "s.png")],
            [f"error: file://{_marker(work)}: malformed JSON (Unterminated string starting at: line"], [tmp / "s.png"])


def _case_work_status_truncated(work: Path, cfg: Path, tmp: Path, monkeypatch):
    status = work / "work" / "round=01" / "status.json"
    status.parent.mkdir(parents=True)
    status.write_text('{"stage": "train", "sta')
    return ["status", "-c", str(cfg), "-w", str(work)], [f"error: file://{status}: malformed JSON ("], []


def _case_marker(needle: str, **changes) -> Callable:
    def case(work: Path, cfg: Path, tmp: Path, monkeypatch):
        _edit_marker(work, **changes)
        return (["review", "--round", "0", "-c", str(cfg), "-w", str(work), "--out", str(tmp / "s.png")],
                [f"error: round 0 is damaged: {needle}", "run `layerboot fsck`"], [tmp / "s.png"])
    return case


def _case_extra_part(work: Path, cfg: Path, tmp: Path, monkeypatch):
    extra = work / "manifests" / "round=00" / ("part-" + "f" * 16 + ".parquet")
    shutil.copy(_part(work), extra)
    return (["report", "-c", str(cfg), "-w", str(work), "--out", str(tmp / "r.html")],
            [f"error: round 0 is damaged: its folder holds {extra.name} besides {_part_named(work, extra)}"],
            [tmp / "r.html"])


def _part_named(work: Path, not_this: Path) -> str:
    return next(p.name for p in (work / "manifests" / "round=00").glob("part-*.parquet") if p != not_this)


def _case_fewer_rows(work: Path, cfg: Path, tmp: Path, monkeypatch):
    store = Store(str(work))
    rewrite_manifest(store, 0, store.read_round(0).to_pylist()[:5], marker_rows=False)  # hash made to match
    return (["report", "-c", str(cfg), "-w", str(work), "--out", str(tmp / "r.html")],
            ["error: round 0 is damaged: its marker says 12 rows, manifest part-", "holds 5"], [tmp / "r.html"])


def _case_remark_committed(work: Path, cfg: Path, tmp: Path, monkeypatch):
    return (["fsck", "--remark", "0", "-c", str(cfg), "-w", str(work)],
            ["error: round 0 is not unmarked in", "(nothing to re-mark)"], [])


def _forget_s3_clients() -> None:
    """s3fs caches one filesystem (and its credentials) per set of arguments for the process: a
    case that changes the AWS environment must not see the client an earlier case made."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


def _case_s3_no_credentials(work: Path, cfg: Path, tmp: Path, monkeypatch):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp / "none"))
    _forget_s3_clients()
    return (["status", "-c", str(cfg), "-w", "s3://layerboot-no-credentials/run"],
            ["error: object store: NoCredentialsError: Unable to locate credentials"], [])


WORKDIR_CASES: dict[str, Callable] = {
    "status-workdir-missing": _case_missing(["status"]),
    "fsck-workdir-missing": _case_missing(["fsck"]),
    "fsck-repair-workdir-missing": _case_missing(["fsck", "--repair"]),
    "report-workdir-missing": _case_missing(["report", "--out", "/tmp/layerboot-never.html"]),
    "resume-workdir-missing": _case_missing(["resume"]),
    "seed-workdir-is-a-file": _case_file(["seed"]),
    "status-workdir-is-a-file": _case_file(["status"]),
    "run-workdir-is-a-file": _case_file(["run"]),
    "workdir-read-only": _case_env_errno(30),  # EROFS
    "workdir-not-permitted": _case_env_errno(13),  # EACCES (simulated: tests run as root)
    "disk-full-while-seeding": _case_disk_full,
    "seed-into-committed-round-0": _case_seed_committed,
    "import-same-triplet-twice-into-new-path": _case_duplicate_import_new_path,
    "review-out-is-a-directory": _case_out_dir("review"),
    "report-out-is-a-directory": _case_out_dir("report"),
    "decompose-given-a-directory": _case_decompose_dir,
    "model-base-local-folder-missing": _case_model_base_missing,
    "marker-truncated": _case_marker_truncated,
    "work-status-truncated": _case_work_status_truncated,
    "marker-file-outside-round": _case_marker("its commit marker names '../../../etc/passwd', not a part file inside "
                                              "the round's folder", file="../../../etc/passwd"),
    "marker-rows-edited": _case_marker("its marker says 20 rows, manifest part-", rows=20),
    "marker-pool-size-edited": _case_marker("its marker's pool_size 999 does not follow from the rounds before it",
                                            pool_size=999),
    "marker-figures-edited": _case_marker("its marker's accepted, candidates do not follow from manifest part-",
                                          candidates=40, accepted=3),
    "extra-part-file-in-round": _case_extra_part,
    "manifest-fewer-rows-matching-hash": _case_fewer_rows,
    "fsck-remark-a-committed-round": _case_remark_committed,
    "s3-no-credentials": _case_s3_no_credentials,
}


def assert_refused_leaving_all_as_it_was(args: list[str], needles: list[str], absent: list[Path], workdir: Path) -> None:
    before = snapshot(workdir)
    res = runner.invoke(app, args)
    assert_user_error(res, *needles)
    assert snapshot(workdir) == before
    assert not (workdir / "quarantine").exists()
    for path in absent:
        assert not path.exists(), path


@pytest.mark.parametrize("case", WORKDIR_CASES, ids=list(WORKDIR_CASES))
def test_bad_workdir_or_environment(case: str, config_path: Path, workdir: Path, tmp_path: Path, monkeypatch):
    args, needles, absent = WORKDIR_CASES[case](workdir, config_path, tmp_path, monkeypatch)
    assert_refused_leaving_all_as_it_was(args, needles, absent + [workdir / "locks"], workdir)


def _case_unlabeled_symlink_loop(work: Path, cfg: Path, tmp: Path, monkeypatch):
    src = tmp / "photos"
    src.mkdir()
    make_triplet(1, SIZE).composite.save(src / "a.png")
    (src / "b.png").symlink_to(src / "b.png")
    return ["add-unlabeled", str(src), "-c", str(cfg), "-w", str(work)], [f"error: {src / 'b.png'}: a symlink loop"], []


def _case_unlabeled_listing_garbage(work: Path, cfg: Path, tmp: Path, monkeypatch):
    src = tmp / "photos"
    src.mkdir()
    make_triplet(1, SIZE).composite.save(src / "a.png")
    listing = work / "unlabeled" / "images.parquet"
    listing.parent.mkdir()
    listing.write_bytes(b"PAR1 not a table PAR1")
    return (["add-unlabeled", str(src), "-c", str(cfg), "-w", str(work)],
            [f"error: file://{listing}: cannot be read (", "Parquet"], [])


def _case_status_pid(pid) -> Callable:
    def case(work: Path, cfg: Path, tmp: Path, monkeypatch):
        import json
        import socket

        status = work / "work" / "round=01" / "status.json"
        status.parent.mkdir(parents=True)
        status.write_text(json.dumps({"stage": "train", "state": "running", "host": socket.gethostname(), "pid": pid}))
        return (["status", "-c", str(cfg), "-w", str(work)],
                [f"error: file://{status}: malformed work status (pid {pid!r} is not a process id)"], [])
    return case


def _case_lock_pid_not_a_number(work: Path, cfg: Path, tmp: Path, monkeypatch):
    import json
    import socket

    lock = work / "locks" / "run.lock"
    lock.parent.mkdir()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": "12x", "started_at": "2026-01-01T00:00:00+00:00",
                                "command": "layerboot run", "token": "f" * 32, "pid_started": None}))
    return (["seed", "-c", str(cfg), "-w", str(work)],
            [f"error: {work} is locked by a process that is still writing its lock file", f"delete {lock}"], [])


def _case_deploy_bad_cron(work: Path, cfg: Path, tmp: Path, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never reached
    return (["deploy", "--pool", "gpu", "--cron", "61 2 * * *", "-c", str(cfg), "-w", str(work)],
            ["error: --cron '61 2 * * *': not a cron schedule (minute hour day-of-month month day-of-week, e.g. "
             "'0 2 * * *')"], [])


def _case_override_record(body: bytes, why: str) -> Callable:
    def case(work: Path, cfg: Path, tmp: Path, monkeypatch):
        record = work / "overrides" / "20260101T000000000000Z-0123456789abcdef.json"
        record.parent.mkdir()
        record.write_bytes(body)
        return (["review", "--round", "0", "--out", str(tmp / "sheet.png"), "-c", str(cfg), "-w", str(work)],
                [f"error: file://{record}: not an override record ({why}"], [tmp / "sheet.png"])
    return case


ONE_LINE_CASES: dict[str, Callable] = {
    "override-record-garbage": _case_override_record(b'{"triplet_id": 1', "malformed JSON: Expecting"),
    "override-record-a-list": _case_override_record(b'["accept"]', "a JSON object with exactly action, id, "
                                                                    "reason, round, triplet_id, when, who is expected"),
    "override-record-unknown-action": _case_override_record(
        b'{"triplet_id": "t", "action": "keep", "reason": "r", "who": "a@b", "when": "2026-01-01T00:00:00+00:00", '
        b'"round": 0, "id": "0123456789abcdef"}', "action 'keep' is not one of accept, reject"),
    "override-record-round-true": _case_override_record(
        b'{"triplet_id": "t", "action": "accept", "reason": "r", "who": "a@b", "when": "2026-01-01T00:00:00+00:00", '
        b'"round": true, "id": "0123456789abcdef"}', "round 'True' is not a round number"),
    "unlabeled-folder-symlink-loop": _case_unlabeled_symlink_loop,
    "unlabeled-listing-garbage": _case_unlabeled_listing_garbage,
    "work-status-pid-not-a-number": _case_status_pid("12x"),
    "work-status-pid-a-float": _case_status_pid(1.5),
    "work-status-pid-negative": _case_status_pid(-1),
    "lock-pid-not-a-number": _case_lock_pid_not_a_number,
    "deploy-bad-cron": _case_deploy_bad_cron,
}


@pytest.mark.parametrize("case", ONE_LINE_CASES, ids=list(ONE_LINE_CASES))
def test_one_line_errors_where_a_traceback_was(case: str, config_path: Path, workdir: Path, tmp_path: Path,
                                               monkeypatch):
    args, needles, absent = ONE_LINE_CASES[case](workdir, config_path, tmp_path, monkeypatch)
    assert_refused_leaving_all_as_it_was(args, needles, absent, workdir)


@pytest.mark.parametrize("command", ["decompose", "compose", "config"])
def test_command_that_never_returns_a_fifo_where_the_cli_reads_an_image_or_a_config(command: str, config_path: Path,
                                                                                     tmp_path: Path):
    """A FIFO (or a device) named like an image would block the read forever: refused at once."""
    import threading
    import time

    fifo = tmp_path / ("x.yaml" if command == "config" else "x.png")
    os.mkfifo(fifo)
    good = tmp_path / "good.png"
    make_triplet(1, SIZE).logo.save(good)
    args = {"decompose": ["decompose", str(fifo), "--adapter", str(tmp_path / "a"), "--out", str(tmp_path / "o"),
                          "-c", str(config_path)],
            "compose": ["compose", "--logo", str(good), "--object", str(fifo), "--adapter", str(tmp_path / "a"),
                        "--out", str(tmp_path / "o"), "-c", str(config_path)],
            "config": ["status", "-c", str(fifo), "-w", str(tmp_path / "w")]}[command]

    def unblock() -> None:  # a reader still blocked on the FIFO gets end-of-file and fails the test
        time.sleep(10)
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader: nothing blocked
            pass

    threading.Thread(target=unblock, daemon=True).start()
    t0 = time.monotonic()
    res = runner.invoke(app, args)
    assert time.monotonic() - t0 < 10
    assert_user_error(res, f"error: {fifo}: not a regular file")
    assert not (tmp_path / "o").exists()


def test_status_and_fsck_say_a_round_is_damaged(config_path: Path, workdir: Path):
    """A hand-edited figure is not shown as fact: status marks the round damaged, without figures."""
    import json

    _edit_marker(workdir, rows=20, pool_size=20)
    before = snapshot(workdir)
    res = runner.invoke(app, ["status", "--json", "-c", str(config_path), "-w", str(workdir)])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)["rounds"]
    assert (row["state"], row["rows"], row["pool_size"]) == ("damaged", None, None)
    assert row["error"].startswith("round 0 is damaged: its marker says 20 rows, manifest part-")
    res = runner.invoke(app, ["fsck", "--repair", "-c", str(config_path), "-w", str(workdir)])
    assert res.exit_code == 1 and "bad_manifest" in res.stdout and "moved nothing" in res.stdout, res.output
    assert snapshot(workdir) == before


def test_debug_shows_the_traceback(config_path: Path, tmp_path: Path, monkeypatch):
    from storage.store import StoreError

    args = ["status", "-c", str(config_path), "-w", str(tmp_path / "missing")]
    res = runner.invoke(app, ["--debug", *args])
    assert isinstance(res.exception, StoreError) and res.exit_code == 1
    monkeypatch.setenv("LAYERBOOT_DEBUG", "1")
    assert isinstance(runner.invoke(app, args).exception, StoreError)
    monkeypatch.delenv("LAYERBOOT_DEBUG")
    assert_user_error(runner.invoke(app, args), "does not exist")


@pytest.mark.slow
def test_s3_endpoint_that_refuses_is_a_one_line_error(config_path: Path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    _forget_s3_clients()
    res = runner.invoke(app, ["status", "-c", str(config_path), "-w", "s3://layerboot-refused/run"])
    assert_user_error(res, 'error: object store: EndpointConnectionError: Could not connect to the endpoint URL: '
                           '"http://127.0.0.1:9/layerboot-refused/run"')


# ----------------------------------------------------------------------------- EXIF orientation
def test_exif_orientation_is_applied_on_import(config_path: Path, tmp_path: Path):
    """A camera photo stored sideways with "rotate 90 degrees clockwise on display" (orientation
    6) is imported as a viewer shows it: what is the left column on disk becomes the top row."""
    src = tmp_path / "import"
    write_triplet(src / "t0")
    img = Image.new("RGB", (SIZE, SIZE), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, SIZE // 2, SIZE))  # left half red on disk
    exif = Image.Exif()
    exif[0x0112] = 6
    _replace(src / "t0" / "logo.png", encode(img, exif=exif.tobytes()))
    work = tmp_path / "w"
    res = runner.invoke(app, ["seed", "-c", str(config_path), "-w", str(work), "--from-dir", str(src), "--n-test", "0"])
    assert res.exit_code == 0, res.output
    store = Store(str(work))
    (row,) = store.read_round(0).to_pylist()
    logo = store.read_image(row["layer1_uri"], size=SIZE)
    assert logo.getpixel((5, 2)) == (255, 0, 0) and logo.getpixel((5, SIZE - 3)) == (0, 0, 255)  # top red, bottom blue


@pytest.mark.slow
@pytest.mark.service
def test_s3_with_wrong_credentials_is_a_one_line_error(config_path: Path, monkeypatch, free_port, tmp_path: Path):
    """An S3 emulator that checks credentials (moto_server with IAM auth from the first request)
    and a key it does not know: one line, exit 2, no botocore traceback."""
    with moto_server(free_port(), tmp_path / "moto.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as url:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        _forget_s3_clients()
        res = runner.invoke(app, ["status", "-c", str(config_path), "-w", "s3://layerboot-wrong-key/run"])
        assert_user_error(res, "error: object store: PermissionError: Forbidden (ClientError: An error occurred (403) "
                               "when calling the HeadObject operation: Forbidden); check the credentials")


@pytest.mark.parametrize("case, message", [
    ("fifo", "not a regular file"),
    ("latin-1", "not UTF-8 text (invalid continuation byte at byte 3)"),
    ("empty", "the prompt bank is empty"),
])
def test_command_that_never_returns_no_fifo_or_bad_text_as_the_prompt_bank(case: str, message: str, tmp_path: Path):
    from configs import ConfigError, load_config
    from models.loop.bootstrap import prompt_bank

    bank = tmp_path / "prompts.txt"
    if case == "fifo":
        os.mkfifo(bank)  # would block the read forever
    else:
        bank.write_bytes(b"caf\xe9 mug\n" if case == "latin-1" else b"\n \n")
    with pytest.raises(ConfigError) as err:
        prompt_bank(load_config("tiny", [f"bootstrap.prompt_bank={bank}"]))
    assert str(err.value) == f"{bank}: {message}"


def test_one_line_errors_a_full_disk_under_the_prefect_database(config_path: Path, workdir: Path, tmp_path: Path,
                                                               monkeypatch):
    """The ephemeral Prefect server on a disk with no room for its database printed ~500 lines of
    SQLite tracebacks, then "Timed out while attempting to connect to ephemeral Prefect API server"
    (exit 1, after the startup timeout). Now: one line at once, before anything is written. The disk
    is a real 1 MiB tmpfs (mounting one needs root with CAP_SYS_ADMIN; skipped otherwise)."""
    import subprocess

    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs here: {mounted.stderr.decode().strip() or mounted.returncode}")
    try:
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
        monkeypatch.setenv("PREFECT_HOME", str(small / "prefect"))
        for command in ("run", "resume"):
            assert_refused_leaving_all_as_it_was(
                [command, "-c", str(config_path), "-w", str(workdir)],
                [f"error: {small / 'prefect'}: 1.0 MiB free on its disk, where the ephemeral Prefect server keeps its "
                 "database (prefect.db, a few MiB a round): free at least 64 MiB, or point PREFECT_API_URL at a Prefect "
                 "server (nothing was written)"], [workdir / "locks", small / "prefect"], workdir)
    finally:
        subprocess.run(["umount", str(small)], check=True)
