"""Pictures people look at instead of reading: contact sheets of triplets."""

from __future__ import annotations

from typing import Sequence

from PIL import Image, ImageDraw

LABEL_HEIGHT = 14
GAP = 6


def contact_sheet(
    triplets: Sequence[tuple[Image.Image, Image.Image, Image.Image]],
    labels: Sequence[str] | None = None,
    columns: int = 4,
    scale: int = 2,
) -> Image.Image:
    """Lay triplets out as `columns` cells per row, each cell `composite | logo | object` upscaled
    by `scale` (nearest neighbour: tiny panels stay crisp) with a label underneath."""
    if not triplets:
        raise ValueError("no triplets to draw")
    panel = triplets[0][0].size[0] * scale
    cell_w, cell_h = 3 * panel, panel + LABEL_HEIGHT
    rows = -(-len(triplets) // columns)
    sheet = Image.new("RGB", (columns * (cell_w + GAP) + GAP, rows * (cell_h + GAP) + GAP), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for i, panels in enumerate(triplets):
        x = GAP + (i % columns) * (cell_w + GAP)
        y = GAP + (i // columns) * (cell_h + GAP)
        for j, img in enumerate(panels):
            sheet.paste(img.convert("RGB").resize((panel, panel), Image.NEAREST), (x + j * panel, y))
        if labels:
            draw.text((x + 2, y + panel + 1), labels[i][: cell_w // 6], fill=(230, 230, 230))
    return sheet
