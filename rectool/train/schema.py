"""From a config and the training data's schema (parquet or ORC) to an ``InputSpec`` and normaliser stats.

The spec says which columns the model reads and how (see ``rectool.programs.inputs``);
it is checked here against the data so that a wrong column name or type is one line
naming the feature, the column and what was found.

List columns (RecIS's data) are resolved here: a ``raw`` feature on a list of numbers is a
``float_vector`` as wide as the list (a fixed-size list's size, else the length of the
first row in the training data), or a plain ``float`` when that length is 1; an ``id``
(or cross input) on a list of ids reads it as its one value a row; a ``sequence`` with
``separator`` reads a string column of joined ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rectool.artifacts import expand_paths, table_files
from rectool.badinput import guarded, reading
from rectool.errors import UserError
from rectool.programs.inputs import ColumnSpec, InputSpec, kind_of, to_tensors
from rectool.tablefile import TableFile, read_schema
from rectool.train.config import Config
from rectool.train.feature_config import CrossFeature, IdFeature, RawFeature, SequenceFeature

STATS_ROWS = 1_000_000


def _column_kind(schema: pa.Schema, column: str, feature: str, source: str) -> str:
    if column not in schema.names:
        raise UserError(f"features.{feature}: column '{column}' is not in {source}; it has {', '.join(schema.names)}")
    kind = kind_of(schema.field(column).type)
    if kind is None:
        raise UserError(f"features.{feature}: column '{column}' has type {schema.field(column).type}, "
                        "which no feature reads (use ints, floats, strings, or lists of one of them)")
    return kind


class _FirstRows:
    """Lengths of list columns in the first row of the training data that has one, read on demand."""

    def __init__(self, source: str, files: Sequence[str] | None) -> None:
        self.source, self._files = source, None if files is None else list(files)

    def files(self) -> list[str]:
        if self._files is None:
            try:
                self._files = table_files(expand_paths(self.source, "data.train_input"), self.source)
            except UserError:
                self._files = []
        return self._files

    def length(self, column: str) -> int | None:
        """Values in the first non-null row of list ``column`` (None: no row to look at)."""
        for path in self.files():
            with reading(("data.train_input", [path])):
                tf = TableFile(path)
                piece = next((i for i, n in enumerate(tf.piece_rows) if n > 0), None)
                if piece is None:
                    continue
                lengths = pc.list_value_length(tf.read_piece(piece, [column]).column(column)).drop_null()
            return int(lengths[0].as_py()) if len(lengths) else None
        return None


def _width(schema: pa.Schema, column: str, feature: str, rows: _FirstRows) -> int:
    """How many numbers a raw feature's list column holds a row."""
    t = schema.field(column).type
    if pa.types.is_fixed_size_list(t):
        return int(t.list_size)
    n = rows.length(column)
    if n is None or n < 1:
        raise UserError(f"features.{feature}: column '{column}' is {t}, and the training data has no non-empty row "
                        "to tell its length; store it as fixed_size_list or give rows")
    return n


def build_input_spec(cfg: Config, schema: pa.Schema, source: str,
                     files: Sequence[str] | None = None) -> InputSpec:
    """The columns ``cfg``'s features read from data of ``schema``; ``files`` (default: those of ``source``)
    are looked at only for the length of a raw feature's list column."""
    cols: dict[str, ColumnSpec] = {}
    rows = _FirstRows(source, files)

    def add(col: ColumnSpec) -> None:
        prev = cols.get(col.name)
        if prev is None or (col.width or 0) > (prev.width or 0) or col.num_buckets is not None:
            cols[col.name] = col

    def one_id(f_name: str, col: str, kind: str, what: str) -> str:
        """A list of ids read as one id a row: its scalar kind (lists longer than 1 are refused)."""
        if kind not in ("int_list", "string_list"):
            return kind
        n = rows.length(col)
        if n is not None and n > 1:
            raise UserError(f"features.{f_name}: {what} column '{col}' holds lists (its first row holds {n} ids); "
                            "an id feature reads one id a row: use kind: sequence")
        return kind.removesuffix("_list")

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
                kind = one_id(f.name, c, _column_kind(schema, c, f.name, source), "cross input")
                if kind not in ("int", "string"):
                    raise UserError(f"features.{f.name}: cross input '{c}' must be an int or string column (is {kind})")
                add(ColumnSpec(c, kind))  # type: ignore[arg-type]
            continue
        col = f.input or f.name
        kind = _column_kind(schema, col, f.name, source)
        if isinstance(f, SequenceFeature):
            separator = None
            if kind == "string" and f.separator is not None:
                hashed = f.hash_bucket_size is not None or any(isinstance(v, str) for v in f.vocab_list or [])
                kind, separator = ("string_list" if hashed else "int_list"), f.separator
            if kind not in ("int_list", "string_list"):
                hint = ("; set separator: if it holds ids joined by a character ('1;2;3')" if kind == "string"
                        else "")
                raise UserError(f"features.{f.name}: sequence column '{col}' must be a list of ids (is {kind}){hint}")
            check = f.num_buckets if (f.num_buckets is not None and not f.modulo) else None
            add(ColumnSpec(col, kind, width=f.max_len, keep="last" if f.truncate == "keep_last" else "first",  # type: ignore[arg-type]
                           default=f.default_id, num_buckets=check, feature=f.name, separator=separator))
        elif isinstance(f, IdFeature):
            kind = one_id(f.name, col, kind, "id")
            if kind not in ("int", "string"):
                raise UserError(f"features.{f.name}: id column '{col}' must be an int or string column (is {kind})")
            if kind == "string" and f.num_buckets is not None:
                raise UserError(f"features.{f.name}: column '{col}' holds strings; use hash_bucket_size or vocab_list")
            check = f.num_buckets if (f.num_buckets is not None and not f.modulo) else None
            add(ColumnSpec(col, kind, default=f.default_id, num_buckets=check, feature=f.name))  # type: ignore[arg-type]
        elif isinstance(f, RawFeature):
            if kind in ("int", "float"):
                add(ColumnSpec(col, "float", default=f.default_value))
            elif kind in ("float_vector", "int_list"):
                width = _width(schema, col, f.name, rows)
                if width > 1 and f.boundaries is not None:
                    raise UserError(f"features.{f.name}: boundaries bucketize one value, and column '{col}' holds "
                                    f"{width} a row; drop boundaries to read them as {width} dense values")
                add(ColumnSpec(col, "float", default=f.default_value) if width == 1 else
                    ColumnSpec(col, "float_vector", width=width, default=f.default_value))
            else:
                raise UserError(f"features.{f.name}: raw column '{col}' must be numeric or a list of numbers "
                                f"(is {kind})")
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
        start = 0
        for batch in guarded(lambda p=path: TableFile(p).iter_batches(checked.names, batch_rows), (source, [path])):
            to_tensors(batch, checked, source=path, with_label=False, row_base=start)
            start += batch.num_rows
        rows += start
    return rows


def normalizer_stats(cfg: Config, files: list[str],
                     spec: InputSpec | None = None) -> dict[str, tuple[list[float], list[float]]]:
    """(mean, std) or (min, max) of raw features whose normaliser has no ``stats`` in the config,
    from the first ``STATS_ROWS`` training rows (deterministic, identical on every rank): one
    pair per matched column, or per component of a list column."""
    wanted = {f.name: f for f in cfg.features
              if isinstance(f, RawFeature) and f.normalizer in ("zscore", "minmax") and f.stats is None}
    if not wanted:
        return {}
    if spec is None:
        spec = build_input_spec(cfg, read_schema(files[0]), "data.train_input", files)
    floats = [c.name for c in spec.columns if c.kind == "float"]  # what a match selects (as FeatureEngine does)
    cols_of = {name: f.columns(floats) if f.match is not None else [f.input or f.name] for name, f in wanted.items()}
    read = InputSpec(columns=[spec.column(c) for c in dict.fromkeys(c for cs in cols_of.values() for c in cs)])
    parts: dict[str, list[np.ndarray]] = {c: [] for c in read.names}
    rows = 0
    for path in files:
        with reading(("data.train_input", [path])):
            tf = TableFile(path)
        base = 0
        for piece, n in enumerate(tf.piece_rows):
            with reading(("data.train_input", [path])):
                t = tf.read_piece(piece, read.names)
            for c, v in to_tensors(t, read, source=path, with_label=False, row_base=base).items():
                parts[c].append(v.numpy().astype(np.float64))
            base += n
            rows += t.num_rows
            if rows >= STATS_ROWS:
                break
        if rows >= STATS_ROWS:
            break
    out = {}
    for name, f in wanted.items():
        a, b = [], []
        for c in cols_of[name]:
            x = np.concatenate(parts[c]) if parts[c] else np.zeros(1)
            x = x.reshape(len(x), -1)  # [n, 1] for a column of numbers, [n, width] for a list column
            a += (x.mean(0) if f.normalizer == "zscore" else x.min(0)).tolist()
            b += (x.std(0) if f.normalizer == "zscore" else x.max(0)).tolist()
        out[name] = (a, b)
    return out
