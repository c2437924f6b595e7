"""Inference on several processes and machines: ``predict``, ``embed`` and ``retrieve`` with ``--nproc``.

    rectool embed --model ex --items items -o emb --nproc 2            # 2 processes on this machine
    torchrun --nnodes 2 --node-rank R --master-addr A --nproc-per-node 4 -m rectool embed ... -o /shared/emb

Inputs: the command's table (rows for ``predict`` and ``embed``, users for ``retrieve``).
``Shard.dataset`` deals its row groups to the ranks in contiguous runs of about equal rows
(rank 0 the first run, rank 1 the next, ...); an ORC input's files are dealt whole (a
dataset cannot cut an ORC file by stripe), so it needs at least as many files as ranks to
keep every rank busy. Each rank computes its run and writes its
part files into ``.rank-RRRRR/`` inside one temp directory that rank 0 opened for the
output (under the output's lock, ``rectool.artifacts``); when every rank has finished,
rank 0 renames the parts to ``part-RRRRR-NNNNN.parquet`` (so the files in name order hold
the rows in input order, as one process writes them), merges the ranks' ``_meta.json``
(``rows`` summed) and commits the output atomically. If any rank fails nothing is committed.
Several machines need an output path on a filesystem all of them see.

Example (library)::

    shard = Shard.from_env()
    with sharded_dir("out/emb", overwrite=False, shard=shard) as tmp:
        for batch in shard.dataset(ds).to_batches(): ...
        write_meta(tmp, kind="embeddings", rows=n)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.dataset as pads

from rectool.artifacts import META_FILE, atomic_dir
from rectool.badinput import reading
from rectool.errors import UserError
from rectool.launch import PeerFailed
from rectool.tablefile import TableFile


@dataclass(frozen=True)
class Shard:
    """This process's place in a sharded job: rank ``rank`` of ``world``."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Shard:
        """From torchrun's environment; joins the process group (gloo: only small messages travel)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="gloo")
        return cls(int(os.environ["RANK"]), world)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def dataset(self, ds: pads.Dataset) -> pads.Dataset:
        """The rows of ``ds`` this rank handles: a contiguous run of its row groups (ORC: of its files)."""
        if not self.enabled:
            return ds
        if not isinstance(ds, pads.FileSystemDataset):
            raise UserError("--nproc: each process reads its share of a parquet or ORC input; stdin cannot be shared")
        if isinstance(ds.format, pads.ParquetFileFormat):
            groups = [g for f in ds.get_fragments() for g in f.split_by_row_group()]
            rows = [g.row_groups[0].num_rows for g in groups]
        else:  # ORC: a dataset fragment cannot be cut by stripe, files are dealt whole
            groups = list(ds.get_fragments())
            with reading(("input", [g.path for g in groups])):
                rows = [TableFile(g.path).num_rows for g in groups]
        total = max(sum(rows), 1)
        mine, start = [], 0
        for g, n in zip(groups, rows):
            # the rank whose equal share of rows the group starts in
            if min(start * self.world // total, self.world - 1) == self.rank:
                mine.append(g)
            start += n
        return pads.FileSystemDataset(mine, ds.schema, ds.format, ds.filesystem)

    def sum(self, value: float) -> float:
        """``value`` summed over ranks (every rank gets the total)."""
        if not self.enabled:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item())

    def all_ok(self, ok: bool) -> bool:
        """True when ``ok`` holds on every rank."""
        return self.sum(0.0 if ok else 1.0) == 0.0

    def broadcast(self, obj: object) -> object:
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def sum_rows(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """The default merge of the ranks' ``_meta.json``: the first one's, with ``rows`` summed."""
    merged = dict(metas[0])
    if all(isinstance(m.get("rows"), int) for m in metas):
        merged["rows"] = sum(m["rows"] for m in metas)
    return merged


@contextlib.contextmanager
def sharded_dir(output: str | os.PathLike[str], overwrite: bool, shard: Shard,
                merge: Callable[[list[dict[str, Any]]], dict[str, Any]] = sum_rows) -> Iterator[Path]:
    """Like ``atomic_dir``, for a job of ``shard.world`` processes: each yields its own folder, rank 0
    commits the merged output once every rank has succeeded (``merge`` combines their ``_meta.json``).
    No collective may run inside the block: a rank that fails there meets the others only here."""
    if not shard.enabled:
        with atomic_dir(output, overwrite) as tmp:
            yield tmp
        return
    with contextlib.ExitStack() as stack:
        tmp, refusal = None, None
        if shard.is_main:
            try:
                tmp = stack.enter_context(atomic_dir(output, overwrite))
            except UserError as exc:  # the output exists, another writer holds it: every rank stops
                refusal = str(exc)
        tmp, refusal = shard.broadcast((None if tmp is None else str(tmp), refusal))
        if refusal is not None:
            raise UserError(refusal)
        mine = Path(tmp) / f".rank-{shard.rank:05d}"
        mine.mkdir()
        try:
            yield mine
            ok = True
        except BaseException:
            ok = False
            shard.all_ok(False)  # the others must not wait for this rank
            raise
        if not shard.all_ok(ok):
            raise PeerFailed("another process of this job failed; nothing was written")
        if shard.is_main:
            _merge(Path(tmp), shard.world, merge)
        _wait_for(shard)  # rank 0 commits when its block exits, after the others have stopped writing


def _wait_for(shard: Shard) -> None:
    import torch.distributed as dist

    dist.barrier()


def _merge(tmp: Path, world: int, merge: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
    """Every rank's parts into ``tmp`` (``part-RRRRR-NNNNN.parquet``) and one ``_meta.json``."""
    metas = []
    for rank in range(world):
        folder = tmp / f".rank-{rank:05d}"
        meta = folder / META_FILE
        if meta.is_file():
            metas.append(json.loads(meta.read_text()))
            meta.unlink()
        for part in sorted(folder.iterdir()):
            part.rename(tmp / f"part-{rank:05d}-{part.name.removeprefix('part-')}")
        folder.rmdir()
    if metas:
        merged = merge(metas)
        merged["processes"] = world
        (tmp / META_FILE).write_text(json.dumps(merged, indent=2, default=str) + "\n")
