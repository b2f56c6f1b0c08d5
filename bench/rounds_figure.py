"""Round A vs round B of a run: accepted and rejected candidates side by side, one PNG.

    python bench/rounds_figure.py runs/tiny --rounds 1 10 --out docs/figures/rounds_1_vs_10.png
        [--sources generated composed]

Columns, for each round and each candidate source: accepted | rejected (when there are any), each cell
`composite | logo | object` with the source and the reject reason (or "accepted") underneath.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from models.loop.viz import contact_sheet
from storage.schema import CANDIDATE_SOURCES, panel_uris
from storage.store import Store


def cells(store: Store, round: int, source: str, accepted: bool, n: int) -> list[tuple[tuple, str]]:
    rows = [r for r in store.read_round(round).to_pylist() if r["source"] == source and r["accepted"] == accepted]
    return [(tuple(store.read_image(uri) for uri in panel_uris(r)),
             f"r{round} {source} " + ("accepted" if accepted else (r["reject_reason"] or "rejected"))) for r in rows[:n]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir")
    ap.add_argument("--rounds", type=int, nargs=2, default=(1, 10))
    ap.add_argument("--n", type=int, default=6, help="rows (triplets per column)")
    ap.add_argument("--out", type=Path, default=Path("docs/figures/rounds_1_vs_10.png"))
    ap.add_argument("--sources", nargs="+", default=list(CANDIDATE_SOURCES), choices=CANDIDATE_SOURCES)
    args = ap.parse_args()
    store = Store(args.workdir)
    columns = [cells(store, r, source, ok, args.n) for r in args.rounds for source in args.sources for ok in (True, False)]
    columns = [col for col in columns if col]  # (a column with nothing in it, e.g. no candidate accepted, is left out)
    some = next(c for col in columns for c in col)
    blank = tuple(Image.new("RGB", some[0][0].size, (40, 40, 40)) for _ in range(3))
    grid, labels = [], []
    for i in range(args.n):  # row-major: one row holds the i-th cell of every column
        for col in columns:
            panels, label = col[i] if i < len(col) else (blank, "")
            grid.append(panels)
            labels.append(label)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(grid, labels, columns=len(columns), scale=2).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
