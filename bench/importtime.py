"""Import cost of a dbguard command: `python -X importtime`, repeated, minimum per module (noise-resistant).

    python bench/importtime.py [--repeat 5] [--top 10] -- validate --dsn DSN --no-data --format json --out /tmp/x.json

Prints the top-N packages by import self time (min over the runs; dbguard_pipeline split by sub-package), and the process's CPU time (user+sys, min over the runs) beside the interpreter's
own (`python -c pass`). CPU time is what to compare on a loaded machine; print `uptime` with any figure.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys

_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def _cpu(cmd: list[str], env: dict) -> tuple[float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, proc.stderr


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("args", nargs="*")
    ns = ap.parse_args()
    env = dict(os.environ)
    best: dict[str, int] = {}
    cpus, base = [], []
    for _ in range(ns.repeat):
        base.append(_cpu([ns.python, "-c", "pass"], env)[0])
        cpu, _err = _cpu([ns.python, "-m", "dbguard_pipeline.cli", *ns.args], env)
        cpus.append(cpu)
        _c, err = _cpu([ns.python, "-X", "importtime", "-m", "dbguard_pipeline.cli", *ns.args], env)
        seen: dict[str, int] = {}
        for line in err.splitlines():
            m = _LINE.match(line)
            if m:  # self time, grouped by package (dbguard_pipeline by sub-package)
                parts = m.group(4).split(".")
                key = ".".join(parts[:2]) if parts[0] == "dbguard_pipeline" else parts[0]
                seen[key] = seen.get(key, 0) + int(m.group(1))
        for name, us in seen.items():
            best[name] = min(best.get(name, us), us)
    print(
        f"cpu (user+sys) min of {ns.repeat}: dbguard {min(cpus):.3f} s, interpreter alone {min(base):.3f} s, "
        f"above the interpreter {min(cpus) - min(base):.3f} s"
    )
    print(f"load average: {os.getloadavg()}")
    print(f"top {ns.top} packages by import self time (min of {ns.repeat} runs, ms):")
    for name, us in sorted(best.items(), key=lambda kv: -kv[1])[: ns.top]:
        print(f"  {us / 1000:8.1f}  {name}")
    print(f"  {sum(best.values()) / 1000:8.1f}  (all imports)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
