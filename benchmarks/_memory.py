"""Peak extra memory of a piece of code, measured in a fresh process (shared by the benchmarks).

The child runs ``setup`` (build inputs, warm up: libraries and kernels loaded), restarts the
resident-set high-water mark (``/proc/self/clear_refs``, Linux), runs ``run`` and reports
``VmHWM - VmRSS before``: the memory the measured code needed beyond what it was given. VmHWM, not
``ru_maxrss``: Linux carries ``ru_maxrss`` over from the parent across ``exec``.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

_PRELUDE = """
import sys
sys.path.insert(0, {benchmarks!r})
def _status_mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
"""

_MEASURE = """
with open("/proc/self/clear_refs", "w") as _f:
    _f.write("5")
_before = _status_mb("VmRSS")
{run}
print(_status_mb("VmHWM") - _before)
"""


def peak_extra_mb(setup: str, run: str) -> float:
    """MB of resident memory ``run`` adds at its peak, after ``setup``, in a fresh interpreter."""
    code = (_PRELUDE.format(benchmarks=str(Path(__file__).resolve().parent)) + textwrap.dedent(setup)
            + _MEASURE.format(run=textwrap.dedent(run)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"memory probe failed:\n{proc.stderr[-3000:]}")
    return float(proc.stdout.split()[-1])
