"""``rectool embed``: run an exported item program over an item table -> an embedding table.

Inputs: an export directory holding an item program (``item_tower`` of two-tower and MIND
models, ``item_embedding`` of TDM and NANN models) and a parquet table with the columns
that program reads (``item_id`` and, e.g., ``category_id``: the ``items/`` table of a
next-item dataset). A table whose ids are in another column (``adgroup_id``) gives them with
``id_column``: the program then reads its ``item_id`` from that column.

Output (parquet, streamed in batches)::

    <id_column> int64, <reserved columns as they are>, item_emb fixed_size_list<float32>[d]

    rectool embed --model out/export --items out/seq/items --output out/item_emb
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from rectool import console
from rectool.artifacts import PartWriter, open_dataset, require_columns, write_meta
from rectool.badinput import count_rows, read_batches
from rectool.errors import UserError
from rectool.programs.device import device_here, program_on
from rectool.programs.inputs import to_tensors
from rectool.programs.load import load_program
from rectool.programs.manifest import ITEM_PARTS, ExportManifest
from rectool.retrieval.formats import ITEM_ID
from rectool.sharding import Shard, sharded_dir

EMBEDDING_COLUMN = "item_emb"


def embed(model: Path, items: str, output: str | os.PathLike[str], id_column: str = "item_id",
          reserved_columns: list[str] | None = None, batch_size: int = 65_536, part: str | None = None,
          overwrite: bool = False, device: str = "auto") -> dict[str, Any]:
    """Embed every item; under a sharded job (``rectool.sharding``) this process embeds its share."""
    shard = Shard.from_env()
    on = device_here(device)
    manifest = ExportManifest.read(Path(model))
    part = part or manifest.item_part
    if part is None:
        raise UserError(f"--model {model}: has no item program ({' or '.join(ITEM_PARTS)}); export a retrieval "
                        "model (two_tower, mind, tdm, nann)")
    program, spec = load_program(Path(model), part, manifest)
    program = program_on(program, on)
    ds = open_dataset(items, "--items")
    reserved = [c for c in (reserved_columns or []) if c != id_column]
    # the program reads item ids as ``item_id``; a table that names them otherwise gives them by --id-column
    mapped = ITEM_ID in spec.names and id_column != ITEM_ID and ITEM_ID not in ds.schema.names
    reads = [id_column if mapped and c == ITEM_ID else c for c in spec.names]
    require_columns(ds.schema, [id_column, *reserved, *reads], items, hint="the item program reads "
                    + ", ".join(reads))
    label = f"--items {items}"
    if count_rows(ds, label) == 0:
        raise UserError(f"--items {items}: has no rows")
    ds = shard.dataset(ds)
    total = count_rows(ds, label)
    columns = list(dict.fromkeys([id_column, *reserved, *reads]))
    dim = None
    with sharded_dir(output, overwrite, shard) as tmp, console.Stopwatch() as sw:
        writer: PartWriter | None = None
        with console.progress("embed", total=total) as bar, torch.inference_mode():
            for batch in read_batches(ds, label, columns=columns, batch_size=batch_size):
                if batch.num_rows == 0:
                    continue
                feed = pa.RecordBatch.from_arrays([*batch.columns, batch.column(id_column)],
                                                  names=[*batch.schema.names, ITEM_ID]) if mapped else batch
                vectors = program(to_tensors(feed, spec, source=str(items), with_label=False)).float().numpy()
                if vectors.ndim != 2:
                    raise UserError(f"--model {model}: {part} returns shape {vectors.shape}, not [B, d]")
                if not np.isfinite(vectors).all():
                    raise UserError(f"--model {model}: {part} produced non-finite vectors; check the checkpoint")
                dim = vectors.shape[1]
                emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
                out = pa.RecordBatch.from_arrays(
                    [batch.column(id_column).cast(pa.int64()), *[batch.column(c) for c in reserved], emb],
                    names=[id_column, *reserved, EMBEDDING_COLUMN])
                if writer is None:
                    writer = PartWriter(tmp, out.schema)
                writer.write(out)
                bar.advance(batch.num_rows)
        rows = 0
        if writer is not None:  # a process of a sharded job may hold no rows
            writer.close()
            rows = writer.rows
            write_meta(tmp, kind="embeddings", inputs=[str(items), str(model)], rows=rows, schema=writer.schema,
                       dim=dim, program=part, id_column=id_column)
    rows = int(shard.sum(rows))
    return {"output": os.fspath(output), "items": rows, "dim": dim, "program": part,
            "items_per_s": round(rows / max(sw.seconds, 1e-9), 1), "processes": shard.world, "device": str(on)}

