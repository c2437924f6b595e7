"""Streaming parquet or ORC -> batched tensors for training and evaluation.

No per-row Python: pieces (parquet row groups, ORC stripes: ``rectool.tablefile``) or
slices of them, the *units*, are read with pyarrow and converted column-wise
(``rectool.programs.inputs.to_tensors``); batches are index slices of a shuffle buffer.
Memory holds one piece per unit being read plus the shuffle buffer, whatever the format.

    pieces ──(sliced until there are ≥ 4 × ranks × workers units, down to single rows on
              a small input)──► units
    units ──(seeded permutation per epoch)──► rank r takes units[r::world]
          ──► loader worker w takes [w::workers] ──► shuffle buffer (≥ ``shuffle_buffer``
          rows, remainder carried over) ──► batches of ``batch_size``

Every choice is seeded by (seed, epoch, rank, worker), and ``torch.utils.data.DataLoader``
interleaves workers in a fixed order, so the batch sequence of an epoch is a pure
function of the config: resuming skips the first ``k`` batches and continues exactly.
``steps_per_epoch`` is computed from the files' footers, identical on every rank, so all
DDP ranks run the same number of steps (the smallest rank's count).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from rectool.artifacts import expand_paths, table_files
from rectool.badinput import reading
from rectool.errors import UserError
from rectool.programs.inputs import InputSpec, is_list, single_values, to_tensors
from rectool.tablefile import TableFile, read_schema

MIN_UNIT_ROWS = 16_384


@dataclass(frozen=True)
class Unit:
    """Rows [start, stop) of one piece (row group or stripe) of one file, whose first row is row
    ``base`` of the file (for messages naming a bad row)."""

    file: str
    piece: int
    start: int
    stop: int
    base: int = 0

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Layout:
    """Scalar columns travel packed: int64 ones as one [B, k] tensor, float32 ones as one [B, m].

    Two row gathers per batch instead of one per column, and two shared-memory tensors
    between a loader process and the trainer instead of dozens; ``unpack`` gives the
    columns back as views.
    """

    ints: tuple[str, ...]
    floats: tuple[str, ...]

    @classmethod
    def of(cls, spec: InputSpec, keys: tuple[str, ...]) -> Layout:
        ints = [c.name for c in spec.columns if c.kind in ("int", "string")] + ["key:" + k for k in keys]
        floats = [c.name for c in spec.columns if c.kind == "float"]
        if spec.label is not None:
            (ints if spec.label_kind == "multiclass" else floats).append("label")
        if spec.weight is not None:
            floats.append("weight")
        return cls(tuple(ints), tuple(floats))

    def pack(self, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {k: v for k, v in t.items() if k not in self.ints and k not in self.floats}
        ints = [t[k] for k in self.ints if k in t]
        floats = [t[k] for k in self.floats if k in t]
        if ints:
            out["__ints"] = torch.stack(ints, dim=1)
        if floats:
            out["__floats"] = torch.stack(floats, dim=1)
        return out

    def unpack(self, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {k: v for k, v in t.items() if not k.startswith("__")}
        if "__ints" in t:
            out.update({k: t["__ints"][:, i] for i, k in enumerate(self.ints)})
        if "__floats" in t:
            out.update({k: t["__floats"][:, i] for i, k in enumerate(self.floats)})
        return out


def list_files(spec: str, what: str) -> list[str]:
    """The parquet or ORC files of an input, each with a readable footer (zero-byte, truncated and
    foreign files are refused here, in one line, before any process reads rows)."""
    files = table_files(expand_paths(spec, what), f"{what} {spec}")
    if not files:
        raise UserError(f"{what} {spec}: holds no parquet or ORC file")
    for f in files:
        with reading((f"{what} {spec}", [f])):
            TableFile(f)
    return files


def _read_unit(tf: TableFile, unit: Unit, columns: list[str]) -> pa.Table:
    with reading((unit.file, [unit.file])):  # a corrupt page or stripe: its footer was fine
        return tf.read_piece(unit.piece, columns).slice(unit.start, unit.rows)


def plan_units(files: list[str], parts: int) -> list[Unit]:
    """Pieces (row groups, stripes), split into slices when there are fewer than ``parts`` of them."""
    pieces: list[tuple[str, int, int, int]] = []
    for f in files:
        with reading((f, [f])):
            rows = TableFile(f).piece_rows
        bases = np.concatenate([[0], np.cumsum(rows)]).astype(int)
        pieces += [(f, i, n, int(bases[i])) for i, n in enumerate(rows) if n > 0]
    split = max(1, math.ceil(parts / max(len(pieces), 1)))

    def cut(min_rows: int) -> list[Unit]:
        units: list[Unit] = []
        for f, i, n, base in pieces:
            k = max(1, min(split, n // min_rows))
            bounds = np.linspace(0, n, k + 1).astype(int)
            units += [Unit(f, i, int(a), int(b), base) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        return units

    units = cut(MIN_UNIT_ROWS)  # slices big enough that reading one is cheap
    if len(units) < parts:  # a small input: slices down to single rows, so every rank and worker gets a share
        units = cut(1)
    return units


def _my_units(units: list[Unit], epoch: int, seed: int, shuffle: bool, rank: int, world: int) -> list[Unit]:
    order = np.random.default_rng([seed, epoch]).permutation(len(units)) if shuffle else np.arange(len(units))
    return [units[i] for i in order][rank::world]


def _batches_of(rows: int, batch: int, drop: bool) -> int:
    return rows // batch if drop else math.ceil(rows / batch)


class BatchStream(IterableDataset):
    """One rank's batches for one epoch (split again across loader workers)."""

    def __init__(self, units: list[Unit], spec: InputSpec, columns: list[str], batch_size: int, *, epoch: int,
                 seed: int, shuffle: bool, shuffle_buffer: int, drop_remainder: bool, rank: int, world: int,
                 keys: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.spec, self.columns, self.batch_size = spec, columns, batch_size
        self.epoch, self.seed, self.shuffle, self.buffer = epoch, seed, shuffle, shuffle_buffer
        self.drop, self.rank, self.world, self.keys = drop_remainder, rank, world, keys
        self.layout = Layout.of(spec, keys)
        self.units = _my_units(units, epoch, seed, shuffle, rank, world)

    def worker_units(self, worker: int, workers: int) -> list[Unit]:
        return self.units[worker::workers]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:  # loader processes leave the cores to the training process
            torch.set_num_threads(1)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        files: dict[str, TableFile] = {}
        pending: list[dict[str, torch.Tensor]] = []
        held = 0
        for unit in self.worker_units(worker, workers):
            if unit.file not in files:
                with reading((unit.file, [unit.file])):
                    files[unit.file] = TableFile(unit.file)
            table = _read_unit(files[unit.file], unit, self.columns)
            row = unit.base + unit.start
            tensors = to_tensors(table, self.spec, source=unit.file, row_base=row)
            for k in self.keys:
                key = table.column(k).combine_chunks()
                if is_list(key.type):  # RecIS's 1-element lists
                    key = single_values(key, k, "the evaluation key", unit.file, row)
                tensors["key:" + k] = torch.from_numpy(
                    np.asarray(key.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64))
            pending.append(self.layout.pack(tensors))
            held += unit.rows
            if held >= max(self.buffer, self.batch_size):
                pending, held = yield from self._drain(pending, rng, final=False)
        yield from self._drain(pending, rng, final=True)

    def _drain(self, pending: list[dict[str, torch.Tensor]], rng: np.random.Generator,
               final: bool) -> Iterator[dict[str, torch.Tensor]]:
        if not pending:
            return [], 0
        merged = pending[0] if len(pending) == 1 else {k: torch.cat([p[k] for p in pending]) for k in pending[0]}
        n = next(iter(merged.values())).shape[0]
        order = torch.from_numpy(rng.permutation(n)) if self.shuffle else None
        full = n // self.batch_size * self.batch_size
        for s in range(0, full, self.batch_size):
            idx = order[s:s + self.batch_size] if order is not None else slice(s, s + self.batch_size)
            yield {k: v[idx] for k, v in merged.items()}
        rest = order[full:] if order is not None else slice(full, n)
        tail = {k: v[rest] for k, v in merged.items()}
        if final:
            if n > full and not self.drop:
                yield tail
            return [], 0
        return ([tail], n - full) if n > full else ([], 0)


class Loader:
    """Builds the per-epoch ``DataLoader`` and knows how many steps an epoch has."""

    def __init__(self, source: str, spec: InputSpec, *, batch_size: int, num_workers: int, seed: int,
                 shuffle: bool, shuffle_buffer: int, drop_remainder: bool, rank: int = 0, world: int = 1,
                 keys: tuple[str, ...] = (), what: str = "data.train_input", max_rows: int | None = None) -> None:
        self.files = list_files(source, what)
        schema = read_schema(self.files[0])
        needed = spec.names + [c for c in (spec.label, spec.weight) if c] + list(keys)
        missing = [c for c in needed if c not in schema.names]
        if missing:
            raise UserError(f"{what} {source}: missing column(s) {', '.join(missing)}; "
                            f"it has {', '.join(schema.names)}")
        self.columns = list(dict.fromkeys(needed))
        self.spec, self.batch_size, self.workers = spec, batch_size, num_workers
        self.seed, self.shuffle, self.buffer, self.drop = seed, shuffle, shuffle_buffer, drop_remainder
        self.rank, self.world, self.keys = rank, world, keys
        self.layout = Layout.of(spec, keys)
        self.units = plan_units(self.files, 4 * world * max(1, num_workers))
        if max_rows is not None:  # evaluation on a prefix
            kept, total = [], 0
            for u in self.units:
                if total >= max_rows:
                    break
                take = min(u.rows, max_rows - total)
                kept.append(Unit(u.file, u.piece, u.start, u.start + take, u.base))
                total += take
            self.units = kept
        if not self.units:
            raise UserError(f"{what} {source}: has no rows")
        self.rows = sum(u.rows for u in self.units)

    def steps_per_epoch(self, epoch: int) -> int:
        """Batches each rank yields this epoch: the minimum over ranks (DDP needs equal counts)."""
        per_rank = []
        for r in range(self.world):
            units = _my_units(self.units, epoch, self.seed, self.shuffle, r, self.world)
            workers = max(1, self.workers)
            per_rank.append(sum(_batches_of(sum(u.rows for u in units[w::workers]), self.batch_size, self.drop)
                                for w in range(workers)))
        return min(per_rank)

    def epoch(self, epoch: int) -> DataLoader:
        """This rank's batches of ``epoch``, packed (see ``Layout``; ``batches`` unpacks them)."""
        stream = BatchStream(self.units, self.spec, self.columns, self.batch_size, epoch=epoch, seed=self.seed,
                             shuffle=self.shuffle, shuffle_buffer=self.buffer, drop_remainder=self.drop,
                             rank=self.rank, world=self.world, keys=self.keys)
        # its own generator: creating the iterator must not draw from the global RNG (dropout's),
        # or a resumed run would see a different random stream than an uninterrupted one
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return DataLoader(stream, batch_size=None, num_workers=self.workers, generator=generator,
                          prefetch_factor=4 if self.workers else None, persistent_workers=False)

    def batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's batches of ``epoch`` as a dict of column tensors."""
        try:
            for packed in self.epoch(epoch):
                yield self.layout.unpack(packed)
        except UserError as exc:  # raised in a loader process: DataLoader appends that process's traceback
            message = str(exc)
            raise UserError(message.rsplit("UserError: ", 1)[-1] if "Original Traceback" in message
                            else message) from None
