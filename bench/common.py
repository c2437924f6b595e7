"""Shared benchmark plumbing: run a command as its own process, time it, read its peak RSS.

Every benchmark compares rectool with a named reference *in the same run* on the
same machine and data, and prints one JSON document; ``bench/run.py`` collects them.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RECTOOL_BENCH_DATA", ROOT / "bench" / ".data"))
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
RECTOOL = [PY, "-m", "rectool"]


def run_measured(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
    """Run ``cmd``; return wall seconds, peak RSS (MB) of that process, exit code and stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
                            cwd=cwd)
    out_chunks: list[bytes] = []
    # wait4 gives the rusage of this one child (its own peak RSS), not of all children so far
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    out_chunks.append(proc.stdout.read() if proc.stdout else b"")
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({rc}):\n{err[-2000:]}")
    return {"seconds": round(seconds, 3), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "stdout": b"".join(out_chunks).decode()}


def best_of(n: int, cmd: list[str], **kw: Any) -> dict[str, Any]:
    """The fastest of ``n`` runs (the least disturbed by other load), with all times kept."""
    runs = [run_measured(cmd, **kw) for _ in range(n)]
    best = min(runs, key=lambda r: r["seconds"])
    return {**best, "all_seconds": [r["seconds"] for r in runs], "stdout": best["stdout"][-500:]}


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gb": round(mem_gb, 1), "python": platform.python_version(),
            "platform": platform.platform()}


def emit(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"bench": name, "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M:%S"), **result}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def shared_data() -> Path | None:
    """``../shared/data`` (or ``$RECTOOL_SHARED_DATA``), None where it is absent."""
    for base in (os.environ.get("RECTOOL_SHARED_DATA"), ROOT.parent / "shared" / "data",
                 ROOT.parent.parent / "shared" / "data"):
        if base and Path(base).is_dir():
            return Path(base)
    return None


def add_grid_option(ap: Any) -> None:
    ap.add_argument("--grid", nargs="*", default=[], metavar="NAME=JSON",
                    help='configurations tried on the validation split, e.g. t10=\'{"model.loss.temperature": 0.1}\'')


def parse_grid(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["t10={...}"]`` -> ``{"t10": {...}}``."""
    return {g.split("=", 1)[0]: json.loads(g.split("=", 1)[1]) for g in items}


def run_shared_datasets(bench: str, datasets: dict[str, dict[str, Any]], names: str,
                        run: Any) -> dict[str, Any]:
    """``run(name, src)`` for each named dataset found under the shared data (``datasets[name]["dir"]``),
    then one JSON result named ``bench`` (with the datasets' names when not all ran)."""
    root = shared_data()
    if root is None:
        raise SystemExit(f"{bench}: ../shared/data not found (set RECTOOL_SHARED_DATA)")
    results = {}
    for name in names.split(","):
        src = root / datasets[name]["dir"]
        if not src.is_dir():
            log(f"{name}: not in {root}, skipped")
            continue
        results[name] = run(name, src)
    emit(bench + ("" if set(datasets) <= set(results) else "_" + "_".join(results)), results)
    return results
