"""The feature engine: config features -> torch ops -> embeddings per feature group.

Every transform is a small ``nn.Module`` of torch ops, so it is traced into the
exported program and ``predict`` needs only the export and the parquet columns.

Ops (RecIS / TorchEasyRec vocabulary), each on int64/float32 tensors::

    HashBucket(10)(tensor([7, 7, 8]))              -> tensor([b7, b7, b8]), stable, in [0, 10)
    IdBucket(5, modulo=True)(tensor([3, 7]))       -> tensor([3, 2])
    VocabLookup([10, 20])(tensor([20, 99]))        -> tensor([2, 0])      (0: out of vocabulary)
    Normalize("log1p")(tensor([0., 9.]))           -> tensor([0., 2.3026])
    Bucketize([1., 5.])(tensor([0., 1., 7.]))      -> tensor([0, 1, 2])
    Cross(100)(tensor([1, 1]), tensor([2, 3]))     -> two different buckets in [0, 100)
    SequenceTruncate(2, keep_last=True)(tensor([[1, 2, 3]]), tensor([3])) -> ([[2, 3]], [2])

Embedding tables: one table per ``embedding_name`` (default: the feature name); tables
of the same dim live in one fused parameter with row offsets, so a group of F features
costs one lookup. Combiners for sequences: ``sum``, ``mean``, ``tile`` (the first
``tile_len`` embeddings concatenated; ``concat`` in a config is the same) and ``none``
(the sequence itself, for attention).

Dense inputs: a raw feature gives one value a row, or ``width`` values for a list column
(``float_vector``, RecIS's ``dense1`` of 8), normalised per component:
``Normalize("zscore", [0., 1.], [1., 2.])(tensor([[1., 5.]]))`` -> ``tensor([[1., 2.]])``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rectool.hashing import hash_strings, mix64_torch
from rectool.programs.inputs import LEN_SUFFIX, InputSpec
from rectool.train.config import Config
from rectool.train.feature_config import CrossFeature, IdFeature, RawFeature, SequenceFeature

_CROSS_PRIME = 1_000_003


# ----------------------------------------------------------------------------- ops


class HashBucket(nn.Module):
    """Stable hash of int64 ids into ``n`` buckets (splitmix64, then modulo)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.remainder(mix64_torch(x), self.n)


class IdBucket(nn.Module):
    """Ids used as they are (range-checked when read) or taken modulo ``n``."""

    def __init__(self, n: int, modulo: bool) -> None:
        super().__init__()
        self.n, self.modulo = n, modulo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.remainder(x, self.n) if self.modulo else x


class VocabLookup(nn.Module):
    """Position in a vocabulary (1-based), 0 for values outside it; string vocabularies are hashed."""

    def __init__(self, vocab: list[int] | list[str]) -> None:
        super().__init__()
        keys = hash_strings([str(v) for v in vocab]) if any(isinstance(v, str) for v in vocab) \
            else np.asarray(vocab, dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        self.register_buffer("sorted_keys", torch.from_numpy(keys[order].copy()))
        self.register_buffer("positions", torch.from_numpy(order.astype(np.int64) + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = torch.searchsorted(self.sorted_keys, x).clamp(max=self.sorted_keys.numel() - 1)
        hit = self.sorted_keys[idx] == x
        return torch.where(hit, self.positions[idx], torch.zeros_like(x))


class Normalize(nn.Module):
    """log1p (sign-preserving), z-score or min-max scaling of a float column."""

    def __init__(self, kind: str, a: float | list[float] = 0.0, b: float | list[float] = 1.0) -> None:
        super().__init__()
        self.kind = kind  # a, b: mean/std or min/max; per column (vectors) for multi-column features
        self.register_buffer("a", torch.tensor(a, dtype=torch.float32))
        self.register_buffer("b", torch.tensor(b, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "log1p":
            return torch.sign(x) * torch.log1p(torch.abs(x))
        if self.kind == "zscore":
            return (x - self.a) / torch.clamp(self.b, min=1e-12)
        if self.kind == "minmax":
            return (x - self.a) / torch.clamp(self.b - self.a, min=1e-12)
        return x


class Bucketize(nn.Module):
    """Bucket index of a value: 0 below the first boundary, i for boundaries[i-1] <= x < boundaries[i]."""

    def __init__(self, boundaries: list[float]) -> None:
        super().__init__()
        self.register_buffer("boundaries", torch.tensor(boundaries, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.bucketize(x.contiguous(), self.boundaries, right=True)


class Cross(nn.Module):
    """Hashed cross of two or more int64 id tensors into ``n`` buckets."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        h = mix64_torch(xs[0])
        for x in xs[1:]:
            h = mix64_torch(h * _CROSS_PRIME + mix64_torch(x))
        return torch.remainder(h, self.n)


class SequenceTruncate(nn.Module):
    """Keep the last (or first) ``max_len`` items of padded sequences; left-aligned, zero padded."""

    def __init__(self, max_len: int, keep_last: bool) -> None:
        super().__init__()
        self.max_len, self.keep_last = max_len, keep_last

    def forward(self, values: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        width = values.shape[1]
        steps = torch.arange(self.max_len, device=values.device)
        new_len = torch.clamp(lengths, max=self.max_len)
        start = (lengths - new_len) if self.keep_last else torch.zeros_like(lengths)
        idx = torch.clamp(start.unsqueeze(1) + steps, max=max(width - 1, 0))
        if width == 0:
            return torch.zeros(values.shape[0], self.max_len, dtype=values.dtype, device=values.device), new_len
        out = torch.gather(values, 1, idx)
        mask = steps.unsqueeze(0) < new_len.unsqueeze(1)
        return torch.where(mask, out, torch.zeros_like(out)), new_len


# ----------------------------------------------------------------------------- engine


@dataclass
class Prepared:
    """One batch after every feature's transform: bucket ids [B], dense values [B], sequences ([B, L], mask)."""

    ids: dict[str, torch.Tensor] = field(default_factory=dict)
    dense: dict[str, torch.Tensor] = field(default_factory=dict)
    sequences: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


@dataclass
class GroupOutput:
    """What a model reads from a feature group.

    ``stacked``: [B, F, D] pooled embeddings when all of them share a dim (for FM);
    ``flat``: [B, sum of dims + n_dense] everything concatenated (for MLPs);
    ``dense``: [B, n_dense] normalised raw values (or None);
    ``sequences``: name -> ([B, L, D] embeddings, [B, L] bool mask) for combiner ``none``.
    """

    stacked: torch.Tensor | None
    flat: torch.Tensor
    dense: torch.Tensor | None
    sequences: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def _id_transform(f: IdFeature | SequenceFeature) -> nn.Module:
    if f.hash_bucket_size is not None:
        return HashBucket(f.hash_bucket_size)
    if f.num_buckets is not None:
        return IdBucket(f.num_buckets, f.modulo)
    return VocabLookup(f.vocab_list or [])


class FeatureEngine(nn.Module):
    """Turns the input tensors into per-group embeddings; owns every embedding table."""

    def __init__(self, cfg: Config, spec: InputSpec, stats: dict[str, tuple[float, float]] | None = None,
                 wide_groups: tuple[str, ...] = (), sparse: bool = True, init_std: float = 0.01) -> None:
        super().__init__()
        self.features = {f.name: f for f in cfg.features}
        self.groups = {g: list(m) for g, m in cfg.feature_groups.items()}
        self.sparse = sparse
        self.kinds = {c.name: c.kind for c in spec.columns}
        self.transforms = nn.ModuleDict()
        self.normalizers = nn.ModuleDict()
        self.truncates = nn.ModuleDict()
        self.raw_columns: dict[str, list[str]] = {}
        self.raw_width: dict[str, int] = {}  # dense values a raw feature gives a row
        stats = stats or {}
        for f in cfg.features:
            if isinstance(f, (IdFeature, SequenceFeature)):
                self.transforms[f.name] = _id_transform(f)
                if isinstance(f, SequenceFeature):
                    self.truncates[f.name] = SequenceTruncate(f.max_len, f.truncate == "keep_last")
            elif isinstance(f, CrossFeature):
                self.transforms[f.name] = Cross(f.hash_bucket_size)
            elif isinstance(f, RawFeature):
                self.raw_columns[f.name] = f.columns([c.name for c in spec.columns if c.kind == "float"])
                col = f.input or f.name
                vector = f.match is None and col in spec.names and spec.column(col).kind == "float_vector"
                self.raw_width[f.name] = int(spec.column(col).width or 1) if vector else len(self.raw_columns[f.name])
                a, b = (f.stats or {}).get("mean", (f.stats or {}).get("min", 0.0)), \
                    (f.stats or {}).get("std", (f.stats or {}).get("max", 1.0))
                if f.stats is None and f.name in stats:
                    a, b = stats[f.name]
                elif f.match is not None or self.raw_width[f.name] > 1:  # one pair per column or component
                    n = self.raw_width[f.name]
                    a, b = [float(a)] * n, [float(b)] * n
                self.normalizers[f.name] = Normalize(f.normalizer, a, b)
                if f.boundaries is not None:
                    self.transforms[f.name] = Bucketize(f.boundaries)
        # tables: embedding_name (or feature name) -> (dim, rows); fused per dim with row offsets
        self.table_of: dict[str, str] = {}
        sizes: dict[str, tuple[int, int]] = {}
        for f in cfg.features:
            dim = getattr(f, "embedding_dim", None)
            if dim is None:
                continue
            key = getattr(f, "embedding_name", None) or f.name
            rows = f.table_size
            prev = sizes.get(key)
            sizes[key] = (dim, max(rows, prev[1] if prev else 0))
            self.table_of[f.name] = key
        for g in wide_groups:
            for name in self.groups.get(g, []):
                if name in self.table_of:
                    key = "wide/" + self.table_of[name]
                    sizes[key] = (1, sizes[self.table_of[name]][1])
        self.offset: dict[str, int] = {}
        self.dim_of_table: dict[str, int] = {}
        rows_per_dim: dict[int, int] = {}
        for key, (dim, rows) in sorted(sizes.items()):
            self.offset[key] = rows_per_dim.get(dim, 0)
            self.dim_of_table[key] = dim
            rows_per_dim[dim] = self.offset[key] + rows
        self.tables = nn.ParameterDict({
            f"dim{dim}": nn.Parameter(torch.randn(rows, dim) * init_std) for dim, rows in sorted(rows_per_dim.items())})

    # -- per batch: every transform once ------------------------------------------------------

    def prepare(self, x: dict[str, torch.Tensor], groups: tuple[str, ...] | None = None,
                features: tuple[str, ...] = ()) -> Prepared:
        """Run each feature's transform once: bucket ids, normalised values, truncated sequences
        (only of the features of ``groups`` and of ``features`` when ``groups`` is given)."""
        p = Prepared()
        wanted = None if groups is None else {n for g in groups for n in self.groups[g]} | set(features)
        for name, f in self.features.items():
            if wanted is not None and name not in wanted:
                continue
            if isinstance(f, SequenceFeature):
                col = f.input or f.name
                values, lengths = self.truncates[name](x[col], x[col + LEN_SUFFIX])
                mask = torch.arange(f.max_len, device=values.device).unsqueeze(0) < lengths.unsqueeze(1)
                p.sequences[name] = (self.transforms[name](values), mask)
            elif isinstance(f, CrossFeature):
                p.ids[name] = self.transforms[name](*[x[c] for c in f.inputs])
            elif isinstance(f, RawFeature):
                if name in self.transforms:
                    p.ids[name] = self.transforms[name](x[f.input or f.name])
                elif f.match is not None:  # [B, k]: one value per matched column
                    p.dense[name] = self.normalizers[name](torch.stack([x[c] for c in self.raw_columns[name]], 1))
                else:
                    p.dense[name] = self.normalizers[name](x[f.input or f.name])
            else:
                p.ids[name] = self.transforms[name](x[f.input or f.name])
        return p

    def _lookup(self, table: str, ids: torch.Tensor) -> torch.Tensor:
        weight = self.tables[f"dim{self.dim_of_table[table]}"]
        return F.embedding(ids + self.offset[table], weight, sparse=self.sparse)

    def _pool(self, f: SequenceFeature, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(emb.dtype)
        if f.combiner == "sum":
            return (emb * m).sum(1)
        if f.combiner == "mean":
            return (emb * m).sum(1) / torch.clamp(m.sum(1), min=1.0)
        return (emb[:, : f.tile_len] * m[:, : f.tile_len]).flatten(1)  # tile

    def sequence(self, name: str, p: Prepared) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L, D] embeddings and [B, L] mask of a sequence feature."""
        ids, mask = p.sequences[name]
        return self._lookup(self.table_of[name], ids), mask

    def embed(self, name: str, p: Prepared) -> torch.Tensor:
        """[B, D] embedding of one pooled id-like feature."""
        f = self.features[name]
        if isinstance(f, SequenceFeature):
            emb, mask = self.sequence(name, p)
            return self._pool(f, emb, mask)
        return self._lookup(self.table_of[name], p.ids[name])

    def _single_ids(self, group: str) -> list[str]:
        return [n for n in self.groups[group]
                if n in self.table_of and not isinstance(self.features[n], SequenceFeature)]

    def _stacked_lookup(self, names: list[str], tables: list[str], dim: int, p: Prepared) -> torch.Tensor:
        """One embedding call for several features of one dim: [B, F, dim]."""
        offsets = torch.tensor([self.offset[t] for t in tables], dtype=torch.int64)
        ids = torch.stack([p.ids[n] for n in names], dim=1) + offsets.to(p.ids[names[0]].device)
        return F.embedding(ids, self.tables[f"dim{dim}"], sparse=self.sparse)

    def group(self, group: str, p: Prepared) -> GroupOutput:
        members = self.groups[group]
        single = self._single_ids(group)
        by_dim: dict[int, list[str]] = {}
        for n in single:
            by_dim.setdefault(self.dim_of_table[self.table_of[n]], []).append(n)
        looked: dict[int, torch.Tensor] = {dim: self._stacked_lookup(names, [self.table_of[n] for n in names], dim, p)
                                           for dim, names in by_dim.items()}
        sequences: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        pooled_seq: dict[str, torch.Tensor] = {}
        for n in members:
            f = self.features[n]
            if isinstance(f, SequenceFeature):
                emb, mask = self.sequence(n, p)
                if f.combiner == "none":
                    sequences[n] = (emb, mask)
                else:
                    pooled_seq[n] = self._pool(f, emb, mask)
        dense = self.dense(group, p)
        if len(looked) == 1 and not pooled_seq:  # the common case: one lookup is the whole group, in order
            stacked = next(iter(looked.values()))
            ordered = [stacked.flatten(1)]
        else:
            index = {n: (dim, i) for dim, names in by_dim.items() for i, n in enumerate(names)}
            parts = [looked[index[n][0]][:, index[n][1]] if n in index else pooled_seq[n]
                     for n in members if n in index or n in pooled_seq]
            dims = {t.shape[-1] for t in parts}
            stacked = torch.stack(parts, dim=1) if parts and len(dims) == 1 else None
            ordered = parts
        flat_parts = ordered + ([dense] if dense is not None else [])
        if not flat_parts:  # e.g. a group of attention-only sequences: nothing to concatenate
            some = next(iter([*p.ids.values(), *p.dense.values(), *(m for _, m in p.sequences.values())]))
            flat_parts = [torch.zeros(some.shape[0], 0, device=some.device)]
        return GroupOutput(stacked, torch.cat(flat_parts, dim=1) if len(flat_parts) > 1 else flat_parts[0],
                           dense, sequences)

    def wide(self, group: str, p: Prepared) -> torch.Tensor:
        """[B, 1]: the sum of the group's 1-dim (first-order) weights."""
        names = self._single_ids(group)
        if not names:
            some = next(iter([*p.ids.values(), *p.dense.values()]))
            return torch.zeros(some.shape[0], 1, device=some.device)
        return self._stacked_lookup(names, ["wide/" + self.table_of[n] for n in names], 1, p).sum(1)

    def dense(self, group: str, p: Prepared) -> torch.Tensor | None:
        """[B, n_dense] normalised raw values of a group, or None when it has none."""
        values = [p.dense[n] for n in self.groups[group] if n in p.dense]
        if not values:
            return None
        return torch.cat([v.unsqueeze(1) if v.dim() == 1 else v for v in values], dim=1)

    def dense_width(self, group: str) -> int:
        return sum(self.raw_width[n] for n in self.groups[group] if isinstance(self.features[n], RawFeature)
                   and n not in self.table_of)

    def flat_width(self, group: str) -> int:
        width = self.dense_width(group)
        for n in self.groups[group]:
            f = self.features[n]
            if n not in self.table_of:
                continue
            dim = self.dim_of_table[self.table_of[n]]
            if isinstance(f, SequenceFeature):
                width += 0 if f.combiner == "none" else dim * (f.tile_len if f.combiner == "tile" else 1)
            else:
                width += dim
        return width

    def columns(self, groups: tuple[str, ...] = (), features: tuple[str, ...] = ()) -> list[str]:
        """The input columns read by the features of ``groups`` and by ``features``."""
        out: list[str] = []
        for n in [n for g in groups for n in self.groups[g]] + list(features):
            f = self.features[n]
            cols = f.inputs if isinstance(f, CrossFeature) else self.raw_columns.get(n, [f.input or f.name])
            out += [c for c in cols if c not in out]
        return out

    def embed_ids(self, name: str, raw: torch.Tensor) -> torch.Tensor:
        """Embeddings of raw values of an id feature's column (any shape), through its transform."""
        return self._lookup(self.table_of[name], self.transforms[name](raw))

    def embedding_parameters(self) -> list[nn.Parameter]:
        return list(self.tables.values())
