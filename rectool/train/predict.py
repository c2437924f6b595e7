"""``rectool predict``: stream a parquet table through an exported model.

Inputs: an ``export`` directory and a table holding the columns its ``input_spec.json``
names (plus the reserved columns to copy). Output (parquet dir, or ``-`` for an Arrow
IPC stream on stdout): the reserved columns, then the requested outputs:

    score  float32  probability of the positive class (binary), or of the top class
    probs  list<float32>  class probabilities (num_class > 1)
    class  int64    the most probable class (num_class > 1)

For the Tianchi pipeline: ``--reserved-columns user_id,item_id`` gives
``user_id, item_id, score``, which ``eval-f1`` and ``submit`` read directly.

    rectool predict --model out/export --input out/dataset/predict --output out/pred \\
        --reserved-columns user_id,item_id
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from rectool import console
from rectool.artifacts import (
    STDIO,
    PartWriter,
    open_dataset,
    require_columns,
    write_ipc_stdout,
    write_meta,
)
from rectool.badinput import count_rows, read_batches
from rectool.errors import UserError
from rectool.programs.device import device_here, program_on
from rectool.programs.inputs import to_tensors
from rectool.programs.load import load_program
from rectool.programs.manifest import ExportManifest
from rectool.sharding import Shard, sharded_dir

OUTPUTS = ("score", "probs", "class")


def _outputs(probs: torch.Tensor, wanted: list[str], num_class: int) -> dict[str, pa.Array]:
    p = probs.detach().float().cpu().numpy()
    out: dict[str, pa.Array] = {}
    for name in wanted:
        if name == "score":
            out[name] = pa.array(p if num_class == 1 else p.max(axis=1), pa.float32())
        elif name == "probs":
            flat = pa.array(p.reshape(-1) if num_class > 1 else p, pa.float32())
            out[name] = pa.FixedSizeListArray.from_arrays(flat, max(num_class, 1))
        else:
            out[name] = pa.array(p.argmax(axis=1) if num_class > 1 else (p > 0.5).astype(np.int64), pa.int64())
    return out


def predict(model: Path, input: str, output: str, reserved_columns: list[str], output_columns: list[str],
            batch_size: int = 65_536, overwrite: bool = False, device: str = "auto") -> dict[str, Any]:
    """Score ``input`` with the export's program; under a sharded job (``rectool.sharding``) this
    process scores its share of the rows and the output is committed once every process is done."""
    shard = Shard.from_env()
    if shard.enabled and output == STDIO:
        raise UserError("--output -: a sharded predict (--nproc) writes a directory; give a path")
    on = device_here(device)
    manifest = ExportManifest.read(Path(model))
    program, spec = load_program(Path(model), "model", manifest)
    program = program_on(program, on)
    num_class = manifest.num_class
    unknown = [c for c in output_columns if c not in OUTPUTS]
    if unknown:
        raise UserError(f"--output-columns {','.join(unknown)}: choose from {', '.join(OUTPUTS)}")
    ds = open_dataset(input, "--input")
    require_columns(ds.schema, reserved_columns, input, hint="check --reserved-columns")
    require_columns(ds.schema, spec.names, input, hint="the model reads these columns")
    ds = shard.dataset(ds)
    label = f"--input {input}"
    total = count_rows(ds, label)
    columns = list(dict.fromkeys(reserved_columns + spec.names))

    def batches():
        with console.progress("predict", total=total) as bar, torch.inference_mode():
            for batch in read_batches(ds, label, columns=columns, batch_size=batch_size):
                if batch.num_rows == 0:
                    continue
                probs = program(to_tensors(batch, spec, source=str(input), with_label=False))
                cols = {c: batch.column(c) for c in reserved_columns} | _outputs(probs, output_columns, num_class)
                bar.advance(batch.num_rows)
                yield pa.RecordBatch.from_pydict(cols)

    if output == STDIO:
        stream = batches()
        first = next(stream, None)
        if first is None:
            return {"output": "-", "rows": write_ipc_stdout([], _empty_schema(ds.schema, reserved_columns,
                                                                              output_columns))}
        return {"output": "-", "rows": write_ipc_stdout(itertools.chain([first], stream), first.schema)}
    with sharded_dir(output, overwrite, shard) as tmp:
        writer: PartWriter | None = None
        for rb in batches():
            if writer is None:
                writer = PartWriter(tmp, rb.schema)
            writer.write(rb)
        if writer is None:
            writer = PartWriter(tmp, _empty_schema(ds.schema, reserved_columns, output_columns))
        writer.close()
        write_meta(tmp, kind="predictions", inputs=[str(input), str(model)], rows=writer.rows, schema=writer.schema,
                   model=manifest.model, checkpoint=manifest.checkpoint)
    return {"output": os.fspath(output), "rows": int(shard.sum(writer.rows)), "processes": shard.world,
            "device": str(on)}


def _empty_schema(schema: pa.Schema, reserved: list[str], outputs: list[str]) -> pa.Schema:
    types = {"score": pa.float32(), "probs": pa.list_(pa.float32()), "class": pa.int64()}
    return pa.schema([schema.field(c) for c in reserved] + [(o, types[o]) for o in outputs])
