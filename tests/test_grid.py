"""The three-panel grid and its task masks (pure torch + PIL, no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models.iclora.grid import (
    GENERATED_PANELS,
    Task,
    build_grid,
    grid_tensor,
    split_grid_tensor,
    task_mask,
    to_pil,
    token_mask,
)

S = 32


def random_panel(seed: int, size: int = S) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(arr)


def triplet(seed: int) -> tuple[Image.Image, Image.Image, Image.Image]:
    return random_panel(3 * seed), random_panel(3 * seed + 1), random_panel(3 * seed + 2)


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_the_grid_is_the_three_panels_left_to_right():
    c, l, o = triplet(0)
    grid = build_grid(c, l, o)
    assert grid.mode == "RGB" and grid.size == (3 * S, S)
    assert all(same(grid.crop((i * S, 0, (i + 1) * S, S)), p) for i, p in enumerate((c, l, o)))


def test_tensor_grid_round_trips_exactly():
    triplets = [triplet(0), triplet(1)]
    x = grid_tensor(triplets)
    assert x.shape == (2, 3, S, 3 * S) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    for b, t in enumerate(triplets):
        assert same(to_pil(x[b]), build_grid(*t))  # [-1, 1] -> uint8 is lossless
    parts = split_grid_tensor(x)
    assert all(p.shape == (2, 3, S, S) for p in parts)
    for b, t in enumerate(triplets):
        assert all(same(to_pil(p[b]), panel) for p, panel in zip(parts, t))
    assert [im.size for im in to_pil(x)] == [(3 * S, S)] * 2  # batch -> list


def test_mismatched_panels_are_refused():
    with pytest.raises(ValueError, match="layer 1 panel is 16x16"):
        build_grid(random_panel(0), random_panel(1, 16), random_panel(2))
    with pytest.raises(ValueError, match="width = 3 x height"):
        split_grid_tensor(torch.zeros(1, 3, 32, 64))


GENERATED = {Task.DECOMPOSE: (1, 2), Task.COMPOSE: (0,), Task.GENERATE: (0, 1, 2)}  # panel indices, left to right


@pytest.mark.parametrize("task", list(Task))
@pytest.mark.parametrize("size", [32, 64])
def test_task_masks_cover_exactly_the_generated_panels(task: Task, size: int):
    assert GENERATED_PANELS[task] == GENERATED[task]
    m = task_mask(task, size)
    assert m.shape == (1, 1, size, 3 * size) and m.dtype == torch.float32
    for i, panel in enumerate(split_grid_tensor(m)):
        expected = 1.0 if i in GENERATED[task] else 0.0
        assert torch.all(panel == expected), i

    t = token_mask(task, size)
    side = size // 16
    assert t.shape == (1, 3 * side * side) and t.dtype == torch.bool
    # packed tokens are row-major over a side x 3*side grid; token (r, c) lies in panel c // side
    cells = t.view(side, 3 * side)
    for i in range(3):
        assert torch.all(cells[:, i * side : (i + 1) * side] == (i in GENERATED[task])), i
    assert int(t.sum()) == len(GENERATED[task]) * side * side


def test_task_values_and_string_lookup():
    assert [t.value for t in Task] == ["decompose", "compose", "generate"]
    assert torch.equal(task_mask("compose", 32), task_mask(Task.COMPOSE, 32))
    assert set(GENERATED_PANELS) == set(Task)


@pytest.mark.parametrize("size", [0, 8, 40, 100])
def test_panel_sizes_off_the_16_px_lattice_are_refused(size: int):
    with pytest.raises(ValueError, match="multiple of 16"):
        task_mask(Task.DECOMPOSE, size)
    with pytest.raises(ValueError, match="multiple of 16"):
        token_mask(Task.DECOMPOSE, size)
