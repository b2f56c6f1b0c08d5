"""Failpoints for fault-injection tests: with LAYERBOOT_CRASH_AT=<point>[,<point>...] the process
kills itself with SIGKILL on reaching a named point, exactly as a power cut or the OOM killer
would. Unset (always, outside tests), a failpoint is one environment lookup."""

from __future__ import annotations

import os
import signal

ENV = "LAYERBOOT_CRASH_AT"


def failpoint(name: str) -> None:
    spec = os.environ.get(ENV)
    if spec and name in spec.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
