"""Run hostile-input cases in this process, each under an alarm, and print one JSON summary with peak memory.

Used by the hostile-corpus tests in a fresh subprocess, so that the peak resident memory they read
(VmHWM from /proc/self/status) is the cases' own:

    python tests/include/hostile_runner.py CASES.json

CASES.json: [{"id", "call": "module:function", "args": [...], "kwargs": {...}}]; every "path:" string
argument becomes a Path. An outcome is "refused: <ErrorType>: <message>", "accepted", "crash: <type>"
or "hang" (no answer within the alarm).
"""

from __future__ import annotations

import importlib
import json
import resource
import signal
import sys
import time
from pathlib import Path

CASE_SECONDS = 30


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so that no `except Exception` under test swallows it."""


def _alarm(signum, frame):  # noqa: ARG001
    raise Hang()


def _peak_rss_kib() -> int:
    """This process image's own peak resident memory (VmHWM). ru_maxrss is not: exec records the parent's peak
    into it when the parent spawned this process with vfork (subprocess does), so a big test process shows."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _arg(value):
    return Path(value[5:]) if isinstance(value, str) and value.startswith("path:") else value


def main(cases_file: str, refusals: str) -> int:
    """Run every case; `refusals` are the comma-separated "module:Error" types that count as a refusal."""
    refused_types = tuple(getattr(importlib.import_module(m), n) for m, n in (r.split(":") for r in refusals.split(",")))
    signal.signal(signal.SIGALRM, _alarm)
    results = []
    for case in json.loads(Path(cases_file).read_text()):
        module, name = case["call"].split(":")
        function = getattr(importlib.import_module(module), name)
        args = [_arg(a) for a in case.get("args", [])]
        kwargs = {k: _arg(v) for k, v in case.get("kwargs", {}).items()}
        started = time.monotonic()
        signal.alarm(CASE_SECONDS)
        try:
            function(*args, **kwargs)
            outcome = "accepted"
        except Hang:
            outcome = "hang"
        except refused_types as exc:
            outcome = f"refused: {type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001  (the point is to count what escapes)
            outcome = f"crash: {type(exc).__name__}: {exc}"
        finally:
            signal.alarm(0)
        results.append({"id": case["id"], "outcome": outcome, "seconds": round(time.monotonic() - started, 3)})
    peak_kib = _peak_rss_kib()
    print(json.dumps({"results": results, "peak_rss_bytes": peak_kib * 1024}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
