"""Run every benchmark (or those named) and write bench/results/<name>.json.

    python bench/run.py                 # all
    python bench/run.py convert         # one
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main() -> None:
    wanted = sys.argv[1:] or BENCHES
    unknown = [w for w in wanted if w not in BENCHES]
    if unknown:
        sys.exit(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    failed = []
    for name in wanted:
        print(f"=== bench {name}", file=sys.stderr, flush=True)
        if subprocess.call([sys.executable, str(HERE / f"bench_{name}.py")], cwd=HERE) != 0:
            failed.append(name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
