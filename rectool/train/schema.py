"""From a config and the training data's parquet schema to an ``InputSpec`` and normaliser stats.

The spec says which columns the model reads and how (see ``rectool.programs.inputs``);
it is checked here against the data so that a wrong column name or type is one line
naming the feature, the column and what was found.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rectool.badinput import guarded, reading
from rectool.errors import UserError
from rectool.programs.inputs import ColumnSpec, InputSpec, kind_of, to_tensors
from rectool.train.config import Config
from rectool.train.feature_config import CrossFeature, IdFeature, RawFeature, SequenceFeature

STATS_ROWS = 1_000_000


def _column_kind(schema: pa.Schema, column: str, feature: str, source: str) -> str:
    if column not in schema.names:
        raise UserError(f"features.{feature}: column '{column}' is not in {source}; it has {', '.join(schema.names)}")
    kind = kind_of(schema.field(column).type)
    if kind is None:
        raise UserError(f"features.{feature}: column '{column}' has type {schema.field(column).type}, "
                        "which no feature reads (use ints, floats, strings or lists of them)")
    return kind


def build_input_spec(cfg: Config, schema: pa.Schema, source: str) -> InputSpec:
    cols: dict[str, ColumnSpec] = {}

    def add(col: ColumnSpec) -> None:
        prev = cols.get(col.name)
        if prev is None or (col.width or 0) > (prev.width or 0) or col.num_buckets is not None:
            cols[col.name] = col

    for f in cfg.features:
        if isinstance(f, RawFeature) and f.match is not None:
            matched = f.columns(schema.names)
            numeric = [c for c in matched if kind_of(schema.field(c).type) in ("int", "float")]
            if not numeric:
                raise UserError(f"features.{f.name}: match '{f.match}' selects no numeric column of {source}")
            for c in numeric:
                add(ColumnSpec(c, "float", default=f.default_value))
            continue
        if isinstance(f, CrossFeature):
            for c in f.inputs:
                kind = _column_kind(schema, c, f.name, source)
                if kind not in ("int", "string"):
                    raise UserError(f"features.{f.name}: cross input '{c}' must be an int or string column (is {kind})")
                add(ColumnSpec(c, kind))  # type: ignore[arg-type]
            continue
        col = f.input or f.name
        kind = _column_kind(schema, col, f.name, source)
        if isinstance(f, SequenceFeature):
            if kind not in ("int_list", "string_list"):
                raise UserError(f"features.{f.name}: sequence column '{col}' must be a list of ids (is {kind})")
            check = f.num_buckets if (f.num_buckets is not None and not f.modulo) else None
            add(ColumnSpec(col, kind, width=f.max_len, keep="last" if f.truncate == "keep_last" else "first",  # type: ignore[arg-type]
                           default=f.default_id, num_buckets=check, feature=f.name))
        elif isinstance(f, IdFeature):
            if kind not in ("int", "string"):
                raise UserError(f"features.{f.name}: id column '{col}' must be an int or string column (is {kind})")
            if kind == "string" and f.num_buckets is not None:
                raise UserError(f"features.{f.name}: column '{col}' holds strings; use hash_bucket_size or vocab_list")
            check = f.num_buckets if (f.num_buckets is not None and not f.modulo) else None
            add(ColumnSpec(col, kind, default=f.default_id, num_buckets=check, feature=f.name))  # type: ignore[arg-type]
        elif isinstance(f, RawFeature):
            if kind not in ("int", "float"):
                raise UserError(f"features.{f.name}: raw column '{col}' must be numeric (is {kind})")
            add(ColumnSpec(col, "float", default=f.default_value))
    label = cfg.data.label if cfg.model.needs_label else None
    if cfg.model.needs_label and (label is None or label not in schema.names):
        raise UserError(f"data.label: column '{label}' is not in {source}; it has {', '.join(schema.names)}")
    weight = cfg.data.sample_weight
    if weight is not None and weight not in schema.names:
        raise UserError(f"data.sample_weight: column '{weight}' is not in {source}")
    return InputSpec(columns=list(cols.values()), label=label,
                     label_kind="multiclass" if getattr(cfg.model, "num_class", 1) > 1 else "binary", weight=weight)


def check_id_ranges(spec: InputSpec, files: list[str], source: str = "data.train_input",
                    batch_rows: int = 262_144) -> int:
    """Run the range check that training applies to every batch (``inputs.to_tensors``: ids of a
    ``num_buckets`` feature without ``modulo``) over all rows of ``files`` now, reading only those
    columns, so ``config check`` refuses what ``train`` would refuse later. Returns the rows read."""
    checked = InputSpec(columns=[c for c in spec.columns if c.num_buckets is not None])
    if not checked.columns:
        return 0
    rows = 0
    for path in files:
        for batch in guarded(lambda p=path: pq.ParquetFile(p).iter_batches(batch_size=batch_rows,
                                                                          columns=checked.names), (source, [path])):
            to_tensors(batch, checked, source=path, with_label=False)
            rows += batch.num_rows
    return rows


def normalizer_stats(cfg: Config, files: list[str]) -> dict[str, tuple[list[float], list[float]]]:
    """(mean, std) or (min, max) of raw features whose normaliser has no ``stats`` in the config,
    from the first ``STATS_ROWS`` training rows (deterministic, identical on every rank)."""
    wanted = {f.name: f for f in cfg.features
              if isinstance(f, RawFeature) and f.normalizer in ("zscore", "minmax") and f.stats is None}
    if not wanted:
        return {}
    schema_names = pq.read_schema(files[0]).names
    numeric = {n for n in schema_names if kind_of(pq.read_schema(files[0]).field(n).type) in ("int", "float")}
    cols_of = {name: [c for c in f.columns(schema_names) if f.match is None or c in numeric]
               for name, f in wanted.items()}
    columns = sorted({c for cols in cols_of.values() for c in cols})
    parts, rows = [], 0
    for path in files:
        with reading(("data.train_input", [path])):
            pf = pq.ParquetFile(path)
        for rg in range(pf.metadata.num_row_groups):
            with reading(("data.train_input", [path])):
                t = pf.read_row_group(rg, columns=columns)
            parts.append(t)
            rows += t.num_rows
            if rows >= STATS_ROWS:
                break
        if rows >= STATS_ROWS:
            break
    table = pa.concat_tables(parts)
    out = {}
    for name, f in wanted.items():
        a, b = [], []
        for c in cols_of[name]:
            x = np.asarray(pc.cast(table.column(c), pa.float64()).fill_null(f.default_value).to_numpy(), np.float64)
            a.append(float(x.mean() if f.normalizer == "zscore" else x.min()))
            b.append(float(x.std() if f.normalizer == "zscore" else x.max()))
        out[name] = (a, b)
    return out
