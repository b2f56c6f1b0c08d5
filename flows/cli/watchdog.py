"""`python -m flows.cli.watchdog PID`: end the processes PID started once PID is gone.

A SIGKILLed `run` runs no cleanup of its own, and the ephemeral Prefect server (~265 MB) and Dask
workers it started would run on forever. This small process, started by
flows.cli.common.children_die_with_this_process, notes PID's descendants twice a second and kills
those it saw once PID has exited (or is a zombie), then exits itself."""

from __future__ import annotations

import os
import sys
import time

import psutil


def watch(parent_pid: int, interval_s: float = 0.5) -> None:
    me = os.getpid()
    seen: dict[int, psutil.Process] = {}  # psutil remembers each one's start time: a reused pid is not killed
    try:
        parent = psutil.Process(parent_pid)
        while parent.status() != psutil.STATUS_ZOMBIE:
            for child in parent.children(recursive=True):
                if child.pid != me:
                    seen.setdefault(child.pid, child)
            time.sleep(interval_s)
    except psutil.Error:  # the parent is gone
        pass
    for process in seen.values():
        try:
            process.kill()
        except psutil.Error:  # ended already
            pass


if __name__ == "__main__":
    watch(int(sys.argv[1]))
