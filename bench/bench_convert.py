"""Benchmark ``rectool convert`` on a generated full-scale Tianchi user file (23.3M rows, ~1 GB).

Measured in one run, each as its own process (wall time, peak RSS):
  rectool    rectool convert --format tianchi-user FILE   (day-partitioned, validated, zstd)
  (a) limit  pyarrow.csv.read_csv of the whole file + one parquet file   -> target rectool >= 0.8x its speed
  (b) pandas read_csv(chunksize=1M) + to_parquet per chunk                -> target rectool >= 5x its speed
  (b') the same with object strings, as pandas <= 2 (pandas 3 reads strings into Arrow)
  doubled    rectool on the file given twice (46.6M rows)                 -> peak RSS < 1 GB and flat

    python bench/bench_convert.py [--rows 23291027] [--repeat 2]
"""

from __future__ import annotations

import argparse
import shutil

from common import DATA, PY, RECTOOL, ROOT, best_of, emit, log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=23_291_027)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    raw = DATA / f"tianchi_{args.rows}"
    src = raw / "offline" / "tianchi_fresh_comp_train_user.csv"
    if not src.exists():
        log(f"generating {args.rows:,} rows into {raw}")
        items = max(1000, int(4_758_484 * args.rows / 23_291_027))
        best_of(1, RECTOOL + ["synth", "--output", str(raw), "--users", str(args.users), "--items", str(items),
                              "--categories", "9557", "--rows", str(args.rows), "--layout", "offline",
                              "--overwrite", "-q"])
    size_mb = src.stat().st_size / 1e6
    work = DATA / "convert_out"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ref = str(ROOT / "bench" / "ref_convert.py")
    res: dict = {}
    log("rectool convert")
    res["rectool"] = best_of(args.repeat, RECTOOL + ["convert", str(src), "-o", str(work / "rt"), "--overwrite", "-q"])
    log("(a) pyarrow whole file")
    res["pyarrow_whole"] = best_of(args.repeat, [PY, ref, "pyarrow", str(src), str(work / "pa.parquet")])
    log("(b) pandas chunks")
    res["pandas_chunks"] = best_of(1, [PY, ref, "pandas", str(src), str(work / "pd")])
    log("(b') pandas chunks, object strings (pandas <= 2)")
    res["pandas_object_chunks"] = best_of(1, [PY, ref, "pandas-object", str(src), str(work / "pdo")])
    log("rectool on the doubled input")
    res["rectool_doubled"] = best_of(1, RECTOOL + ["convert", str(src), str(src), "-o", str(work / "rt2"),
                                                   "--overwrite", "-q"])
    for r in res.values():
        r.pop("stdout", None)
    rt = res["rectool"]["seconds"]
    summary = {
        "rows": args.rows, "input_mb": round(size_mb, 1),
        "rectool_mb_per_s": round(size_mb / rt, 1),
        "speed_vs_pyarrow_whole": round(res["pyarrow_whole"]["seconds"] / rt, 3),
        "speed_vs_pandas_chunks": round(res["pandas_chunks"]["seconds"] / rt, 2),
        "speed_vs_pandas_object_chunks": round(res["pandas_object_chunks"]["seconds"] / rt, 2),
        "rss_mb": res["rectool"]["peak_rss_mb"], "rss_mb_doubled_input": res["rectool_doubled"]["peak_rss_mb"],
        "targets": {"vs_pyarrow_whole": ">= 0.8", "vs_pandas": ">= 5", "rss_mb": "< 1024 and flat"},
    }
    shutil.rmtree(work, ignore_errors=True)
    emit("convert", {"summary": summary, "runs": res})


if __name__ == "__main__":
    main()
