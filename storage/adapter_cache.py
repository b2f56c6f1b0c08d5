"""Finished adapters kept by the fingerprint of what they were trained from, for runs that share a
folder (`bootstrap.adapter_cache`): a run whose round would train an adapter the folder already
holds copies it instead. `layerboot ablate` gives its five variants one, since four of them train
the same round-1 adapter from the same seeds, and every later round whose pool did not change.

<root>/<fingerprint>/ holds the adapter folder's files; its completion marker (the adapter's own
`train_done.json`, which names the fingerprint) is written last and read first, so an entry half
written by a killed run is never taken, and a later run writes it again whole.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from storage.fs import Location, is_temp_name


class AdapterCache:
    def __init__(self, uri: str, marker: str) -> None:
        self.loc = Location.parse(uri)
        self.marker = marker  # the file a finished adapter folder writes last

    def _finished(self, entry: str) -> bool:
        return self.loc.exists(posixpath.join(entry, self.marker))

    def _marker_last(self, names: list[str]) -> list[str]:
        return sorted(names, key=lambda name: (name == self.marker, name))

    def fetch(self, fingerprint: str, out: Path) -> bool:
        """Copy the entry into folder `out` (its marker last); False when there is no finished entry."""
        entry = self.loc.join(fingerprint)
        if not self._finished(entry):
            return False
        dest = Location.parse(out)
        for name in self._marker_last([posixpath.basename(f) for f in self.loc.fs.find(entry)]):
            dest.write_atomic(dest.join(name), self.loc.read_bytes(posixpath.join(entry, name)))
        return True

    def publish(self, fingerprint: str, folder: Path) -> None:
        """Copy the finished adapter in `folder` (its files: a finished adapter folder is flat) into
        the entry, its marker last, unless the entry is finished already."""
        entry = self.loc.join(fingerprint)
        if self._finished(entry):
            return
        for name in self._marker_last([p.name for p in folder.iterdir() if p.is_file() and not is_temp_name(p.name)]):
            self.loc.write_atomic(posixpath.join(entry, name), (folder / name).read_bytes())
