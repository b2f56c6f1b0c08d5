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

    def fetch(self, fingerprint: str, out: Path) -> bool:
        """Copy the entry into folder `out` (its marker last); False when there is no finished entry."""
        entry = self.loc.join(fingerprint)
        if not self.loc.exists(posixpath.join(entry, self.marker)):
            return False
        files = sorted(self.loc.fs.find(entry))
        marker = posixpath.join(entry, self.marker)
        dest = Location.parse(out)
        for path in [f for f in files if f != marker] + [marker]:
            dest.write_atomic(dest.join(posixpath.relpath(path, entry)), self.loc.read_bytes(path))
        return True

    def publish(self, fingerprint: str, folder: Path) -> None:
        """Copy the finished adapter in `folder` into the entry (its marker last), unless already there."""
        entry = self.loc.join(fingerprint)
        if self.loc.exists(posixpath.join(entry, self.marker)):
            return
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not is_temp_name(p.name))
        for path in sorted(files, key=lambda p: p.name == self.marker):  # the marker last
            self.loc.write_atomic(posixpath.join(entry, path.relative_to(folder).as_posix()), path.read_bytes())

