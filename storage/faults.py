"""Failpoints for fault-injection tests (tests/faults/). A failpoint is a named place in the code
where a run can be made to die or fail on purpose; unset (always, outside tests), one is one
environment lookup.

    LAYERBOOT_CRASH_AT=<point>[,<point>...]   SIGKILL this process on reaching a point, exactly as
                                              a power cut or the OOM killer would
    LAYERBOOT_FAIL_AT=<point>:<ERRNO>[,...]   raise OSError(errno.<ERRNO>) there instead, every
                                              time it is reached (e.g. commit-r01-manifest:ENOSPC)
    LAYERBOOT_FAILPOINT_LOG=<file>            append the name of every point reached to <file>
                                              (before it fires), to prove a test reached it

POINTS lists every failpoint in the order a round reaches them; `{r}` is the round (two digits),
`{s}` the shard (three digits). A test checks that an uninterrupted run reaches all of them.
"""

from __future__ import annotations

import errno
import os
import signal

ENV = "LAYERBOOT_CRASH_AT"
FAIL_ENV = "LAYERBOOT_FAIL_AT"
LOG_ENV = "LAYERBOOT_FAILPOINT_LOG"

POINTS = (
    "seed-r00-rows",                 # round 0: seed blobs written, not committed
    "train-r{r}-start",              # stage boundary: before training
    "train-r{r}-checkpoint",         # inside train: a checkpoint saved (first rounds only: warm rounds are short)
    "train-r{r}-saved",              # inside train: adapter saved, stage result not recorded
    "train-r{r}-done",               # stage result recorded
    "generate-r{r}-s{s}-start",      # shard stages: before the shard
    "generate-r{r}-s{s}-computed",   # inside: blobs written, shard file not
    "generate-r{r}-s{s}-done",       # shard file written
    "judge-r{r}-s{s}-start",
    "judge-r{r}-s{s}-computed",
    "judge-r{r}-s{s}-done",
    "cycle-r{r}-s{s}-start",
    "cycle-r{r}-s{s}-computed",
    "cycle-r{r}-s{s}-done",
    "evaluate-r{r}-start",
    "evaluate-r{r}-done",
    "commit-r{r}-start",             # commit: before anything is written
    "commit-r{r}-adapter",           # adapter copied to adapters/round=NN, manifest not staged
    "commit-r{r}-manifest",          # manifest staged under manifests/_staging, its marker not
    "commit-r{r}-staged",            # staging complete, not published
    "commit-r{r}-publishing",        # object stores only: all but the manifest copied to round=NN
    "commit-r{r}-published",         # round visible, metrics/rounds.parquet not refreshed
    "commit-r{r}-done",              # metrics refreshed, the round's work folder not removed
)
OBJECT_STORE_ONLY = frozenset({"commit-r{r}-publishing"})  # a local commit publishes in one rename


def point(template: str, round: int, shard: int = 0) -> str:
    return template.format(r=f"{round:02d}", s=f"{shard:03d}")


def failpoint(name: str) -> None:
    crash, fail, log = os.environ.get(ENV), os.environ.get(FAIL_ENV), os.environ.get(LOG_ENV)
    if not (crash or fail or log):
        return
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{name}\n".encode())
        finally:
            os.close(fd)
    if crash and name in crash.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
    for spec in (fail or "").split(","):
        where, _, code = spec.partition(":")
        if where == name:
            number = getattr(errno, code)
            raise OSError(number, f"{os.strerror(number)} (injected at failpoint {name})")
