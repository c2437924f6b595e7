"""``rectool retrieve``: each user's top-K items with an exported model.

Methods (``--method``):

``hnsw``   user vectors from the export's ``user_tower`` (two_tower, mind), searched in an
           ``hnsw build`` index (``--index``, ``--ef``). MIND's interests are searched one by
           one and merged (the union, best score per item).
``brute``  exact search with the same model: dot products with every item vector of
           ``--items`` (an embedding table) for towers; for a pair scorer (tdm, nann) every item
           of ``--items`` (a table with ``item_id``), of ``--tree``'s leaves or of ``--index``
           is scored by the model ("recall-all").
``tdm``    layer-wise beam search over ``--tree`` scored by the export's ``scorer`` (``--beam``,
           default 2 × topk): ``rectool.tree.beam``.
``nann``   beam search over the HNSW graph of ``--index`` (or an ``hnsw graph`` output)
           scored by the export's ``scorer`` (``--ef``, ``--rounds``, ``--expand``):
           ``rectool.retrieval.nann_search``.

A two-tower trained with ``model.repeat`` adds its learned bonus to the items of each
user's history (``rectool.retrieval.repeat``: exact with ``brute``, and with ``hnsw`` on an
ip or cosine index); ``--repeat-bonus B`` sets that bonus (or adds one to any tower export,
``--repeat-column`` naming the history). ``--item-to-item W1`` / ``--item-similarity W2``
(brute) mix in soft maxima over the history items' own queries and item vectors
(``rectool.retrieval.item_to_item``).

Inputs: ``--users``, a table with ``user_id`` and the columns the program reads (the
``test/inputs`` of a next-item dataset). With ``--exclude-seen`` (default) the items of
``seen_item_ids`` (or ``--exclude-column``) are never returned; TDM's beam search scores
them -inf at the leaf level, so a user's long history does not widen the beam.

The method's searcher (``rectool.retrieval.registry``) does the search; this module reads
the users in batches, hands each batch to it, and writes what it returns.

Output (recall format, ``rectool.retrieval.formats``): ``user_id, item_ids list<int64>,
scores list<float32>, n_scored int64`` (the items the model scored for the user; for
towers with an index, not counted) + ``--reserved-columns``.

    rectool retrieve --method nann --model out/nann_export --index out/nann_index \\
        --users out/seq/test/inputs --output out/recalls/nann --topk 200
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rectool import console
from rectool.artifacts import open_dataset, require_columns, write_meta
from rectool.badinput import count_rows, read_batches
from rectool.programs.device import device_here, program_on
from rectool.programs.inputs import InputSpec, to_tensors
from rectool.programs.load import load_program
from rectool.programs.manifest import ExportManifest
from rectool.retrieval.formats import USER_ID, Ragged, RecallWriter, TopK, int_column
from rectool.retrieval.options import RetrieveOptions
from rectool.retrieval.registry import searcher_for
from rectool.retrieval.searcher import SearchSetup
from rectool.sharding import Shard, sharded_dir, sum_rows


def retrieve(options: RetrieveOptions, model: Path, users: str, output: str | os.PathLike[str],
             overwrite: bool = False) -> dict[str, Any]:
    """Each user's top ``options.topk`` items; under a sharded job (``rectool.sharding``) this process
    retrieves for its share of the users."""
    shard = Shard.from_env()
    on = device_here(options.device)
    model = Path(model)
    manifest = ExportManifest.read(model)
    kind = searcher_for(options.method, manifest, str(model))
    part = "user_tower" if kind.family == "towers" else "scorer"
    program, spec = load_program(model, part, manifest)
    ds = open_dataset(users, "--users")
    column = _exclude_column(options, ds.schema.names, users)
    reserved = [c for c in options.reserved_columns if c != USER_ID]
    user_spec = InputSpec(columns=[c for c in spec.columns if c.name != manifest.parts[part].candidate])
    columns = list(dict.fromkeys([USER_ID, *user_spec.names, *reserved, *([column] if column else [])]))
    require_columns(ds.schema, columns, users, hint="give the test inputs of a next-item dataset")
    searcher = kind(SearchSetup(options, manifest, program_on(program, on), user_spec, on))
    ds = shard.dataset(ds)
    total = count_rows(ds, f"--users {users}")
    with sharded_dir(output, overwrite, shard, merge=_merge_meta) as tmp, console.Stopwatch() as sw:
        writer = RecallWriter(tmp, n_scored=True, extra_fields=[ds.schema.field(c) for c in reserved])
        scored = 0
        with console.progress(f"retrieve {options.method}", total=total) as bar:
            for batch in read_batches(ds, f"--users {users}", columns=columns, batch_size=options.batch_size):
                if batch.num_rows == 0:
                    continue
                table = pa.Table.from_batches([batch])
                x = to_tensors(table, user_spec, source=str(users), with_label=False)
                result = searcher.search(x, _exclusions(table, column))
                n_scored = result.n_scored if result.n_scored is not None else np.zeros(len(result), np.int64)
                scored += int(n_scored.sum())
                writer.write(int_column(table[USER_ID], f"--users {users}", USER_ID),
                             TopK(result.item_ids, result.scores, result.lengths, n_scored),
                             {c: table.column(c).combine_chunks() for c in reserved})
                bar.advance(batch.num_rows)
        writer.close()
        catalogue = searcher.catalogue_size
        write_meta(tmp, kind="recalls", inputs=[str(users), str(model), *options.inputs], rows=writer.rows,
                   method=options.method, topk=options.topk, exclude=column or "none",
                   mean_scored_per_user=scored / max(writer.rows, 1), scored=scored, catalogue=catalogue,
                   search_seconds=round(time.perf_counter() - sw.start, 3), **searcher.meta())
    rows, scored = int(shard.sum(writer.rows)), shard.sum(scored)
    return {"output": os.fspath(output), "method": options.method, "users": rows, "topk": options.topk,
            "mean_items_scored": round(scored / max(rows, 1), 1),
            "share_of_catalogue_scored": round(scored / max(rows, 1) / catalogue, 5) if catalogue else "-",
            "users_per_s": round(rows / max(sw.seconds, 1e-9), 1), "processes": shard.world, "device": str(on)}


def _exclude_column(options: RetrieveOptions, names: list[str], users: str) -> str | None:
    """The list column of items never to return: --exclude-column, else seen_item_ids if present."""
    if not options.exclude_seen:
        return None
    column = options.exclude_column or ("seen_item_ids" if "seen_item_ids" in names else None)
    if column is None:
        console.warn(f"--users {users} has no seen_item_ids column: nothing is excluded")
    return column


def _exclusions(table: pa.Table, column: str | None) -> Ragged | None:
    if column is None:
        return None
    arr = table.column(column).combine_chunks()
    lists = arr.fill_null([]) if arr.null_count else arr
    offsets = np.asarray(lists.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    values = np.asarray(lists.values.to_numpy(zero_copy_only=False), dtype=np.int64)
    return Ragged(offsets - offsets[0], values[offsets[0]:offsets[-1]])


def _merge_meta(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """The processes' metas of a sharded retrieve: users and scored items add up, the slowest search counts."""
    merged = sum_rows(metas)
    merged["scored"] = sum(m["scored"] for m in metas)
    merged["mean_scored_per_user"] = merged["scored"] / max(merged["rows"], 1)
    merged["search_seconds"] = max(m["search_seconds"] for m in metas)
    return merged
