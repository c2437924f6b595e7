"""Reference converters for ``bench_convert.py`` (each run as its own process).

  pyarrow  the practical limit: read the whole CSV with pyarrow (all cores) and write one parquet file
  pandas   what competition code does: pandas.read_csv(chunksize=...) and to_parquet per chunk
  pandas-object   the same with object strings (pandas <= 2 behaviour; pandas 3 defaults to Arrow strings)
"""

from __future__ import annotations

import sys
from pathlib import Path


def pyarrow_whole(src: str, out: str) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pacsv.read_csv(src)
    pq.write_table(table, out, compression="zstd")


def pandas_chunks(src: str, out: str, chunksize: int = 1_000_000) -> None:
    import pandas as pd

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for i, chunk in enumerate(pd.read_csv(src, chunksize=chunksize)):
        chunk["time"] = pd.to_datetime(chunk["time"], format="%Y-%m-%d %H")
        chunk.to_parquet(folder / f"part-{i:05d}.parquet", compression="zstd", index=False)


def pandas_object_chunks(src: str, out: str) -> None:
    import pandas as pd

    pd.options.future.infer_string = False
    pandas_chunks(src, out)


if __name__ == "__main__":
    mode, src, out = sys.argv[1:4]
    {"pyarrow": pyarrow_whole, "pandas": pandas_chunks, "pandas-object": pandas_object_chunks}[mode](src, out)
