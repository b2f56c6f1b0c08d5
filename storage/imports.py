"""Importing a user's own triplets from a folder, validated in full before anything is written.

Layout: one sub-folder per triplet holding one image per panel, named by the layer task's panel
names (.png/.jpg/.jpeg/.webp), and optionally `prompt.txt`; for the logo/object task:

    my_triplets/mug-01/composite.png  logo.png  object.png  prompt.txt

A folder of single images (composites without layers, or one layer's images) is read by
read_image_dir: `photos/mug.png` and optionally `photos/mug.txt` describing it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from storage.fs import read_regular_file
from storage.hashing import sha256_hex
from storage.images import ImageError, decode_image, encode_png

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_FILE_BYTES = 64 * 2**20


class ImportFailed(ValueError):
    """The folder cannot be imported; `problems` lists every bad input by name."""

    def __init__(self, directory: Path, problems: list[str]):
        self.problems = problems
        if len(problems) == 1:  # the usual case: one clear line
            super().__init__(f"{problems[0]} (nothing imported)")
            return
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        super().__init__(f"{directory}: {len(problems)} problem(s), nothing imported:\n  {shown}")


@dataclass(frozen=True)
class ImportedTriplet:
    name: str
    panels: tuple[Image.Image, ...]  # in the order of the panel names read
    prompt: str


def read_triplet_dir(directory: str | os.PathLike[str], panel_size: int,
                     panel_names: tuple[str, ...]) -> list[ImportedTriplet]:
    """Read and validate every triplet under `directory` (one `<panel name>.png` per panel);
    raise ImportFailed naming every bad file."""
    root = Path(directory)
    if not root.is_dir():
        raise ImportFailed(root, [f"{root}: not a directory"])
    real_root = root.resolve()
    problems: list[str] = []
    triplets: list[ImportedTriplet] = []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        problems.append(f"{root}: no triplet folders (expected <name>/{'.png, '.join(panel_names)}.png)")
    for folder in folders:
        if not folder.resolve().is_relative_to(real_root):  # a symlinked folder: its files live elsewhere
            problems.append(f"{folder}: points outside the import folder ({folder.resolve()})")
            continue
        panels, prompt = {}, folder.name.replace("_", " ").replace("-", " ")
        for panel in panel_names:
            candidates = [folder / f"{panel}{s}" for s in IMAGE_SUFFIXES if (folder / f"{panel}{s}").exists()]
            if len(candidates) != 1:
                problems.append(f"{folder}/{panel}.*: expected exactly one image, found {len(candidates)}")
                continue
            try:
                panels[panel] = decode_image(_read_inside(candidates[0], real_root), str(candidates[0]), size=panel_size)
            except ImageError as e:
                problems.append(str(e))
        prompt_file = folder / "prompt.txt"
        if prompt_file.exists():
            try:
                prompt = _read_inside(prompt_file, real_root).decode("utf-8").strip()
            except ImageError as e:
                problems.append(str(e))
            except UnicodeDecodeError as e:
                problems.append(f"{prompt_file}: not UTF-8 text ({e.reason} at byte {e.start})")
        if len(panels) == len(panel_names):
            triplets.append(ImportedTriplet(folder.name, tuple(panels[p] for p in panel_names), prompt))
    seen: dict[tuple[str, ...], str] = {}  # the same three panels twice would be one triplet id twice
    for t in triplets:
        content = tuple(sha256_hex(encode_png(p)) for p in t.panels)
        if content in seen:
            problems.append(f"{root / t.name}: the same triplet as {root / seen[content]} (identical "
                            f"{', '.join(panel_names[:-1])} and {panel_names[-1]} images)")
        else:
            seen[content] = t.name
    if problems:
        raise ImportFailed(root, problems)
    return triplets


@dataclass(frozen=True)
class ImportedImage:
    name: str  # the file's name without its suffix
    image: Image.Image
    prompt: str  # from <name>.txt beside it, else the name in words


def read_image_dir(directory: str | os.PathLike[str], panel_size: int,
                   refuse_duplicates: bool = False) -> list[ImportedImage]:
    """Read and validate every image directly under `directory` (plain composites, or one layer; an
    optional `<name>.txt` beside an image describes it); raise ImportFailed naming every bad file.
    With `refuse_duplicates`, two files of the same content (as stored: decoded, converted, encoded
    as PNG) are refused too, naming both."""
    root = Path(directory)
    if not root.is_dir():
        raise ImportFailed(root, [f"{root}: not a directory"])
    real_root = root.resolve()
    problems: list[str] = []
    images: list[ImportedImage] = []
    seen: dict[str, Path] = {}  # with refuse_duplicates: content sha256 -> the first file holding it
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        problems.append(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)})")
    for path in files:
        prompt = path.stem.replace("_", " ").replace("-", " ")
        try:
            image = decode_image(_read_inside(path, real_root), str(path), size=panel_size)
            text = path.with_suffix(".txt")
            if text.exists():
                prompt = _read_inside(text, real_root).decode("utf-8").strip()
        except ImageError as e:
            problems.append(str(e))
            continue
        except UnicodeDecodeError as e:
            problems.append(f"{path.with_suffix('.txt')}: not UTF-8 text ({e.reason} at byte {e.start})")
            continue
        if refuse_duplicates:
            sha = sha256_hex(encode_png(image))
            if sha in seen:
                problems.append(f"{path}: the same image as {seen[sha]}")
                continue
            seen[sha] = path
        images.append(ImportedImage(path.stem, image, prompt))
    if problems:
        raise ImportFailed(root, problems)
    return images


def _read_inside(path: Path, real_root: Path) -> bytes:
    """Read a regular file that really lives under the import folder (no symlinks out of it)."""
    try:
        real = path.resolve()
    except RuntimeError:  # Python before 3.13 says "Symlink loop from ..." this way
        raise ImageError(f"{path}: a symlink loop") from None
    if not real.is_relative_to(real_root):
        raise ImageError(f"{path}: points outside the import folder ({real})")
    try:
        return read_regular_file(real, MAX_FILE_BYTES, ImageError, name=str(path))
    except OSError as e:
        raise ImageError(f"{path}: {e.strerror}") from None
