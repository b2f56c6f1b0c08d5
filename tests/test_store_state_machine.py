"""The store as a state machine (hypothesis's RuleBasedStateMachine): random sequences of seed,
commit, override, a kill at a commit's failpoint, resume, tampering, fsck, repair, heal and a clean
finish, with the invariants checked after every step:

- every committed round reads back unchanged (its manifest's bytes, its content digest, its
  adapter), or is reported damaged, by the reader and by fsck, exactly when it was tampered with;
- nothing referenced is deleted: every blob a committed round, the unlabeled bank, a pending
  round's work or a killed seed needs is there (unless a rule deleted it on purpose);
- fsck reports every tampering by kind and path, and nothing it cannot explain;
- after a clean finish (every killed commit resumed, the flow's tidy-up, what the rules broke put
  back) fsck finds nothing: no orphan, no leftover.

Driven at the storage level in-process, as the flow drives it (Store.commit_round with the round's
work shard written first, RoundWork, tidy_committed), without a model. A kill is the failpoint
raising an exception that no handler in the code catches (a BaseException), so a commit stops there
as under SIGKILL; `finally` blocks still run, which a SIGKILL would skip, so the `litter` rule writes
what a killed atomic write leaves (a temp file). The real SIGKILL chains run in
tests/faults/test_kill_chain.py.

The normal suite runs a short budget, derandomized (the same sequences every run); `-m slow` a long
one, random. Both print how many sequences and steps ran. What it found so far: a commit killed while
staging whose resume was killed just after publishing left a staging folder no later step removed
(fixed in storage.work.tidy_committed; tests/test_storage.py pins it)."""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import storage.faults
import storage.store
from storage import schema
from storage.fsck import fsck, purge, remark
from storage.overrides import record_override
from storage.store import MARKER, Store, StoreError
from storage.work import RoundWork, tidy_committed
from tests.conftest import T0, make_row, solid

KILL_POINTS = ("adapter", "manifest", "staged", "published")  # a local commit's failpoints, in order
MAX_ROUND = 4


class Killed(BaseException):
    """SIGKILL at a failpoint, in-process: no `except Exception` of the code sees it."""


@dataclass
class Round:
    manifest: str  # its part file's name
    data: bytes  # the manifest's bytes as committed
    digest: str
    blobs: set[str]
    train_ids: dict[str, bool]  # triplet id of each training row -> accepted as committed
    adapter: dict[str, bytes] | None  # relative path -> bytes, as committed
    adapter_hashed: bool = True  # False once fsck --remark rebuilt its marker (no file hashes in it)


@dataclass
class Damage:
    kind: str  # the fsck finding it must cause
    path: str  # relative to the workdir
    repairable: bool
    undo: object = None  # puts it back (None: remove the path)
    round: int | None = None
    blobs: set[str] = field(default_factory=set)  # blobs only it makes unreadable (bad_manifest)


COUNTS = {"sequences": 0, "steps": 0, "kills": 0, "tampers": 0, "fscks": 0, "repairs": 0, "finishes": 0}


class StoreMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        COUNTS["sequences"] += 1
        self.dir = Path(tempfile.mkdtemp(prefix="layerboot-store-sm-"))
        self.store = Store(str(self.dir / "work"))
        self.kill_at: str | None = None
        storage.store.failpoint = self._failpoint
        self.rounds: dict[int, Round] = {}
        self.pending: dict[int, tuple] = {}  # killed commits: round -> (rows, adapter folder)
        self.killed: set[int] = set()  # rounds whose commit was killed at least once (staging may be left)
        self.damages: dict[str, Damage] = {}
        self.overrides: dict[str, bool] = {}  # triplet id -> accepted, the latest override
        self.bank: set[str] = set()  # blobs of the unlabeled bank
        self.cache_entries: list[str] = []
        self.clock = 0

    def teardown(self):
        storage.store.failpoint = storage.faults.failpoint
        shutil.rmtree(self.dir, ignore_errors=True)

    def _failpoint(self, name: str) -> None:
        if name == self.kill_at:
            self.kill_at = None
            COUNTS["kills"] += 1
            raise Killed(name)

    # ---- helpers ----------------------------------------------------------------------------------
    def rel(self, path: str) -> str:
        return posixpath.relpath(path, self.store.loc.root)

    def abs(self, rel: str) -> Path:
        return self.dir / "work" / rel

    @property
    def unrepairable(self) -> bool:
        return any(not d.repairable for d in self.damages.values())

    def next_round(self) -> int:
        return max(self.rounds) + 1 if self.rounds else 0

    def _commit(self, r: int, rows: list[dict], adapter: Path | None, kill: str | None) -> None:
        table = schema.to_table(rows)
        self.kill_at = f"commit-r{r:02d}-{kill}" if kill else None
        try:
            self.store.commit_round(r, table, adapter_dir=str(adapter) if adapter else None)
        except Killed as k:
            self.killed.add(r)
            if not str(k).endswith("-published"):
                self.pending[r] = (rows, adapter)
                return
        self.pending.pop(r, None)
        self.kill_at = None
        marker = self.store.marker(r)
        data = self.abs(f"manifests/round={r:02d}/{marker['file']}").read_bytes()
        blobs = {row[f"{p}_uri"] for row in rows for p in schema.PANELS}
        files = ({str(p.relative_to(adapter)): p.read_bytes() for p in sorted(adapter.rglob("*")) if p.is_file()}
                 if adapter else None)
        self.rounds[r] = Round(marker["file"], data, marker["content_digest"], blobs,
                               {row["triplet_id"]: row["accepted"] for row in rows if row["split"] == "train"}, files)

    def _rows(self, r: int, accepted: list[bool]) -> list[dict]:
        if r == 0:
            return [make_row(self.store, 0, i) for i in range(len(accepted))]
        return [make_row(self.store, r, i, source="generated", accepted=a) for i, a in enumerate(accepted)]

    # ---- the run ------------------------------------------------------------------------------------
    @precondition(lambda self: not self.rounds and 0 not in self.pending)
    @rule(n=st.integers(1, 3), kill=st.sampled_from((None, *KILL_POINTS)))
    def seed(self, n, kill):
        self._commit(0, self._rows(0, [True] * n), None, kill)

    @precondition(lambda self: self.rounds and not self.pending and not self.unrepairable
                  and self.next_round() <= MAX_ROUND)
    @rule(accepted=st.lists(st.booleans(), min_size=0, max_size=3), with_adapter=st.booleans(),
          kill=st.sampled_from((None, *KILL_POINTS)))
    def commit(self, accepted, with_adapter, kill):
        r = self.next_round()
        rows = self._rows(r, accepted)
        RoundWork(self.store, r).write_shard("generate", 0, schema.to_table(rows))  # as the flow's stages do
        adapter = None
        if with_adapter:
            adapter = self.dir / f"adapter-{r}"
            adapter.mkdir(exist_ok=True)
            (adapter / "pytorch_lora_weights.safetensors").write_bytes(f"weights {r}".encode())
            (adapter / "train_log.json").write_text(json.dumps([{"step": 0, "rec": r}]))
        self._commit(r, rows, adapter, kill)

    @precondition(lambda self: self.pending)
    @rule(kill=st.sampled_from((None, None, *KILL_POINTS)))
    def resume(self, kill):
        """`layerboot resume`: the killed commit again (round 0's seeding writes its blobs again),
        then the flow's tidy-up of committed rounds."""
        r = min(self.pending)
        rows, adapter = self.pending[r]
        if r == 0:
            rows = self._rows(0, [True] * len(rows))
        self._commit(r, rows, adapter, kill)
        if not self.pending and not self.unrepairable:
            tidy_committed(self.store)

    @precondition(lambda self: self.rounds and not self.unrepairable and not self.pending)
    @rule(data=st.data(), accept=st.booleans())
    def override(self, data, accept):
        ids = sorted(t for rd in self.rounds.values() for t in rd.train_ids)
        tid = data.draw(st.sampled_from(ids))
        self.clock += 1
        record_override(self.store, tid, "accept" if accept else "reject", "checked by eye", who="qa@test",
                        when=T0 + timedelta(seconds=self.clock))
        self.overrides[tid] = accept

    @precondition(lambda self: not self.unrepairable)
    @rule(n=st.integers(1, 2))
    def add_unlabeled(self, n):
        from storage.imports import ImportedImage
        from storage.unlabeled import add_unlabeled

        start = len(self.bank)
        images = [ImportedImage(f"photo{start + i}", solid((255, start + i, 128)), "a photo") for i in range(n)]
        add_unlabeled(self.store, images)
        self.bank |= {self.store.put_image(im.image)[0] for im in images}

    @rule()
    def cache_entry(self):
        import torch

        from models.iclora.encoded import LatentCache

        cache = LatentCache(self.dir / "work" / "cache" / "latents", "ab" * 32, 32)
        key = uuid.uuid4().hex * 2
        cache.put(key, {"x0": torch.full((12, 256), float(len(self.cache_entries) + 1))})
        self.cache_entries.append(self.rel(str(cache.path(key))))

    # ---- tampering (one unrepairable damage at a time, so fsck's report is exact) -------------------
    def _healthy_rounds(self) -> list[int]:
        hit = {d.round for d in self.damages.values() if d.round is not None}
        return [r for r in sorted(self.rounds) if r not in hit]

    @precondition(lambda self: self.rounds and not self.unrepairable and not self.pending)
    @rule(data=st.data(), how=st.sampled_from(("corrupt_blob", "missing_blob", "bad_manifest", "unmarked_round",
                                               "damaged_adapter", "bad_bank")))
    def tamper(self, data, how):
        COUNTS["tampers"] += 1
        rounds = self._healthy_rounds()
        if how in ("corrupt_blob", "missing_blob"):
            key = data.draw(st.sampled_from(sorted(set().union(*(self.rounds[r].blobs for r in rounds)))))
            path = self.abs(key)
            before = path.read_bytes()
            if how == "corrupt_blob":
                path.write_bytes(before[:-1] + bytes([before[-1] ^ 1]))
            else:
                path.unlink()
            self.damages[key] = Damage(how, key, False, undo=lambda p=path, b=before: p.write_bytes(b))
        elif how == "bad_manifest":
            r = data.draw(st.sampled_from(rounds))
            rel = f"manifests/round={r:02d}"
            path = self.abs(f"{rel}/{self.rounds[r].manifest}")
            before = path.read_bytes()
            at = data.draw(st.integers(0, 1 << 30)) % len(before)  # (sizes vary with timestamps)
            path.write_bytes(before[:at] + bytes([before[at] ^ 0x20]) + before[at + 1:])
            others = set().union(set(), *(self.rounds[q].blobs for q in rounds if q != r)) | self.bank
            self.damages[rel] = Damage(how, rel, False, undo=lambda p=path, b=before: p.write_bytes(b), round=r,
                                       blobs=self.rounds[r].blobs - others)
        elif how == "unmarked_round":
            r = max(self.rounds)  # (the round after an unmarked one cannot prove its pool size)
            if r not in rounds:
                return
            rel = f"manifests/round={r:02d}"
            path = self.abs(f"{rel}/{MARKER}")
            before = path.read_bytes()
            path.unlink()
            self.damages[rel] = Damage(how, rel, False, undo=lambda p=path, b=before: p.write_bytes(b), round=r)
        elif how == "damaged_adapter":
            hashed = [r for r in rounds if self.rounds[r].adapter and self.rounds[r].adapter_hashed]
            if not hashed:
                return
            r = data.draw(st.sampled_from(hashed))
            rel = f"adapters/round={r:02d}"
            name = data.draw(st.sampled_from(sorted(self.rounds[r].adapter)))
            path = self.abs(f"{rel}/{name}")
            before = path.read_bytes()
            path.write_bytes(before + b" edited")
            self.damages[rel] = Damage(how, rel, False, undo=lambda p=path, b=before: p.write_bytes(b), round=r)
        elif how == "bad_bank" and self.bank:
            path = self.abs("unlabeled/images.parquet")
            before = path.read_bytes()
            at = data.draw(st.integers(0, 1 << 30)) % len(before)  # (sizes vary with timestamps)
            path.write_bytes(before[:at] + bytes([before[at] ^ 0x20]) + before[at + 1:])
            others = set().union(set(), *(self.rounds[r].blobs for r in rounds))
            self.damages["unlabeled/images.parquet"] = Damage(how, "unlabeled/images.parquet", False,
                                                              undo=lambda p=path, b=before: p.write_bytes(b),
                                                              blobs=self.bank - others)

    @rule(how=st.sampled_from(("orphan_blob", "temp_file", "bad_cache_entry")))
    def litter(self, how):
        """What a kill elsewhere or another tool leaves: repairable."""
        COUNTS["tampers"] += 1
        if how == "orphan_blob":
            key, _ = self.store.blobs.put(f"orphan {uuid.uuid4().hex}".encode())
            self.damages[key] = Damage(how, key, True)
        elif how == "temp_file":
            rel = f"blobs/00/.tmp-{uuid.uuid4().hex}-x.png"
            self.abs(rel).parent.mkdir(parents=True, exist_ok=True)
            self.abs(rel).write_bytes(b"half a png")
            self.damages[rel] = Damage(how, rel, True)
        elif self.cache_entries:
            rel = self.cache_entries.pop()
            from safetensors.torch import load_file, save_file
            import torch

            zeros = {k: torch.zeros_like(v) for k, v in load_file(str(self.abs(rel))).items()}
            save_file(zeros, str(self.abs(rel)))
            self.damages[rel] = Damage(how, rel, True)

    @precondition(lambda self: self.unrepairable)
    @rule()
    def heal(self):
        """The operator puts back what was broken (from a backup), or re-marks an unmarked round."""
        (damage,) = [d for d in self.damages.values() if not d.repairable]
        if damage.kind == "unmarked_round" and self.store.recorded_metrics() is not None and damage.round in \
                self.store.recorded_metrics()["round"].to_pylist():
            remark(self.store, damage.round)
            self.rounds[damage.round].adapter_hashed = False  # rebuilt from rounds.parquet: no file hashes
        else:
            damage.undo()
        del self.damages[damage.path]

    # ---- fsck ---------------------------------------------------------------------------------------
    def _explained(self, report) -> None:
        """Every damage is reported by kind and path; every other finding follows from one."""
        found = {(f.kind, f.path): f.repairable for f in report.findings}
        unreadable = any(d.kind in ("bad_manifest", "bad_bank") for d in self.damages.values())
        for d in self.damages.values():
            assert (d.kind, d.path) in found, (d, report.findings)
            # while a manifest cannot be trusted no blob is removable: its references are unknown
            assert found[(d.kind, d.path)] == (d.repairable and not (unreadable and d.kind == "orphan_blob")), d
        masked = set().union(*(d.blobs for d in self.damages.values()))  # blobs of an unreadable manifest
        for f in report.findings:
            if (f.kind, f.path) in {(d.kind, d.path) for d in self.damages.values()}:
                continue
            if f.kind == "staging":  # a killed commit's staging folder
                assert any(f.path.startswith(f"manifests/_staging/round={r:02d}.") for r in self.killed), f
                continue
            if f.kind == "orphan_blob" and 0 in self.pending:  # a killed seeding's blobs, before its resume
                continue
            assert f.kind == "orphan_blob" and f.path in masked and not f.repairable, (f, self.damages)

    @rule()
    def check(self):
        COUNTS["fscks"] += 1
        self._explained(fsck(self.store))

    @rule()
    def repair(self):
        COUNTS["repairs"] += 1
        report = fsck(self.store, repair=True)
        self._explained(report)
        assert set(report.repaired) == {f.path for f in report.findings if f.repairable}
        for path in report.repaired:
            assert not self.abs(path).exists() and (self.dir / "work" / report.quarantine / path).exists()
            self.damages.pop(path, None)

    @rule()
    def purge_quarantine(self):
        purge(self.store)

    @precondition(lambda self: self.rounds)
    @rule()
    def clean_finish(self):
        """Resume what was killed, put back what was broken, remove the litter: nothing is left over."""
        COUNTS["finishes"] += 1
        for d in list(self.damages.values()):
            if d.repairable:
                os.unlink(self.abs(d.path))
                del self.damages[d.path]
        while self.unrepairable:
            self.heal()
        while self.pending:
            self.resume(None)
        tidy_committed(self.store)
        report = fsck(self.store)
        assert report.findings == [], report.findings
        assert report.rounds == sorted(self.rounds)

    # ---- invariants, after every step ---------------------------------------------------------------
    @invariant()
    def committed_rounds_read_back_unchanged_or_damaged(self):
        COUNTS["steps"] += 1
        unmarked = {d.round for d in self.damages.values() if d.kind == "unmarked_round"}
        assert self.store.committed_rounds() == sorted(set(self.rounds) - unmarked)
        assert self.store.unmarked_rounds() == sorted(unmarked)
        broken = {d.round: d.kind for d in self.damages.values() if d.round is not None}
        for r, rd in self.rounds.items():
            if r in unmarked:
                continue
            if broken.get(r) == "bad_manifest":
                with pytest.raises(StoreError, match=f"round {r} is damaged"):
                    self.store.read_round(r, validate=False)
                continue
            marker, table = self.store.verify_round(r)
            assert marker["file"] == rd.manifest and marker["content_digest"] == rd.digest
            assert self.abs(f"manifests/round={r:02d}/{rd.manifest}").read_bytes() == rd.data
            if rd.adapter is None:
                continue
            if broken.get(r) == "damaged_adapter":
                with pytest.raises(StoreError, match=f"round {r}'s adapter is damaged"):
                    self.store.verify_adapter(r)
                continue
            recorded = self.store.verify_adapter(r)
            assert (recorded is not None) == rd.adapter_hashed
            for name, data in rd.adapter.items():
                assert self.abs(f"adapters/round={r:02d}/{name}").read_bytes() == data

    @invariant()
    def nothing_referenced_is_deleted(self):
        needed = set().union(set(), *(rd.blobs for rd in self.rounds.values())) | self.bank
        for r, (rows, _) in self.pending.items():  # (a killed seeding writes its blobs again on resume)
            needed |= {row[f"{p}_uri"] for row in rows for p in schema.PANELS} if r else set()
        deleted = {d.path for d in self.damages.values() if d.kind == "missing_blob"}
        for key in needed - deleted:
            assert self.abs(key).is_file(), key

    @invariant()
    def the_pool_follows_commits_and_overrides(self):
        if self.unrepairable or not self.rounds or self.pending:
            return
        last = max(self.rounds)
        expected = {t for rd in self.rounds.values() for t, a in rd.train_ids.items() if self.overrides.get(t, a)}
        assert set(self.store.pool(last)["triplet_id"].to_pylist()) == expected


def run_machine(max_examples: int, steps: int, derandomize: bool) -> dict:
    """Run the machine; derandomized, the same sequences every time (the normal suite's budget)."""
    for k in COUNTS:
        COUNTS[k] = 0
    StoreMachine.TestCase.settings = settings(
        max_examples=max_examples, stateful_step_count=steps, deadline=None, derandomize=derandomize,
        suppress_health_check=list(HealthCheck), database=None)
    t0 = time.monotonic()
    StoreMachine.TestCase().runTest()
    figures = dict(COUNTS, seconds=round(time.monotonic() - t0, 1))
    print(f"\nstore state machine: {figures}")
    return figures


def test_the_store_as_a_state_machine_short_budget():
    figures = run_machine(max_examples=30, steps=25, derandomize=True)
    assert figures["sequences"] >= 30 and figures["kills"] > 0 and figures["fscks"] > 0


# `make test` runs slow tests too, so the long budget there is ~1.5 min; a soak sets the count, e.g.
# LAYERBOOT_STATE_MACHINE_EXAMPLES=600 .venv/bin/python -m pytest -m slow tests/test_store_state_machine.py (~11 min)
LONG_EXAMPLES = int(os.environ.get("LAYERBOOT_STATE_MACHINE_EXAMPLES", "150"))


@pytest.mark.slow
def test_the_store_as_a_state_machine_long_budget():
    figures = run_machine(max_examples=LONG_EXAMPLES, steps=50, derandomize=False)
    assert figures["sequences"] >= LONG_EXAMPLES and figures["kills"] > 0 and figures["finishes"] > 0
