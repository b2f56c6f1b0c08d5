"""Its labelled corruption benchmark: clean triplets, and triplets whose box panel is another scene's."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from models.domains.overprint.world import make_triplet
from storage.hashing import derive_seed


@dataclass(frozen=True)
class BenchItem:
    kind: str
    panels: tuple[Image.Image, Image.Image, Image.Image]
    broken: frozenset[str]

    def label(self, criterion: str) -> bool:
        return criterion not in self.broken


def build_benchmark(run_seed: int, n: int, size: int, codec=None) -> list[BenchItem]:
    items = []
    for i in range(n):
        t = make_triplet(derive_seed(run_seed, "overprint-calibration", i), size)
        if i % 2 == 0:
            items.append(BenchItem("clean", t.panels, frozenset()))
        else:
            other = make_triplet(derive_seed(run_seed, "overprint-calibration", i, "donor"), size)
            items.append(BenchItem("wrong_box", (t.composite, t.disc, other.box), frozenset({"recomposes"})))
    if codec is not None:
        items += [BenchItem(it.kind + "+codec", tuple(p), it.broken) for it, p in zip(items, codec([it.panels for it in items]))]
    return items
