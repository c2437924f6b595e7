"""Node attributes: every node's value of the item attributes, as TorchEasyRec aggregates them.

Inputs: the tree, the items table (one row per item, in *item order*: sorted by
(category, id) for ``tree init``, input order for ``tree cluster``) and the attribute
columns. Outputs: ``node_attribute_table`` gives one row per node in level order,
``[id_field int64 (node id)] + attr_fields + raw_attr_fields``, which is ``node_feature/``;
``feature_strings`` renders it as the ``feature`` column of ``node_table.txt``.

Rules (TorchEasyRec's ``TreeBuilder``)
    * A leaf keeps its item's values.
    * Categorical attributes (``--attr-fields``): a non-leaf node takes the mode over all
      the leaves below it. Non-string columns skip nulls and break ties by the smallest
      value (pyarrow's ``mode``); string columns count nulls and "" as values and break
      ties by the value met first, in item order, among the node's leaves
      (``Counter.most_common`` over the leaves in item order).
    * Numeric attributes (``--raw-attr-fields``): the mean over the leaves below, nulls
      skipped (all null -> null). float32 and float64 columns keep their type; integer
      columns become float64 (TorchEasyRec fails on a fractional mean of an int column).
    * Text: strings as they are, integers in decimal, floats as Python's ``repr`` (a
      float32 through its float64 value, ``0.1 -> 0.10000000149011612``), booleans
      ``True``/``False``; a null categorical is "" and a null numeric is ``0``.
    * In ``node_table.txt`` the categorical values are joined by the attribute delimiter
      (``--attr-delimiter``, default ``,``), the numeric ones too, and the two groups by ``,``
      (TorchEasyRec's ``attr_delimiter``: the TDM sampler splits the attributes on it).

Example: leaves with ``brand`` ``[7, 7, 9]`` and ``price`` ``[1.0, 2.0, None]`` give their
parent ``brand 7`` and ``price 1.5``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rectool.errors import UserError
from rectool.tree.kernels import segment_modes
from rectool.tree.structure import Tree

_STRUCTURAL = r'[\t\n\r"]'


def leaf_ranges(tree: Tree) -> tuple[np.ndarray, np.ndarray]:
    """For every node, the range ``[lo, hi)`` of its leaves among the leaves in level order."""
    lo = np.empty(tree.num_nodes, dtype=np.int64)
    hi = np.empty(tree.num_nodes, dtype=np.int64)
    start = tree.leaf_start
    lo[start:] = np.arange(tree.num_leaves)
    hi[start:] = lo[start:] + 1
    co = tree.child_offsets
    for level in range(tree.num_levels - 2, -1, -1):
        a, b = tree.level_offsets[level], tree.level_offsets[level + 1]
        lo[a:b] = lo[co[a:b]]
        hi[a:b] = hi[co[a + 1:b + 1] - 1]
    return lo, hi


def _plain(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def _dictionary(arr: pa.Array, string_like: bool) -> tuple[np.ndarray, pa.Array]:
    """(codes per row, dictionary); for non-strings the codes follow the sorted values (smallest wins ties)."""
    if string_like:  # null is a value
        enc = pc.dictionary_encode(arr, null_encoding="encode")
        return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary
    enc = pc.dictionary_encode(arr)  # nulls stay null
    order = pc.sort_indices(enc.dictionary).to_numpy()
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    idx = enc.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    codes = rank[idx] if order.size else np.zeros(len(arr), np.int64)
    codes[~enc.indices.is_valid().to_numpy(zero_copy_only=False)] = -1
    return codes, enc.dictionary.take(pa.array(order))


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def check_attr_types(schema: pa.Schema, attr_fields: list[str], raw_attr_fields: list[str], source: str) -> None:
    for name in attr_fields:
        t = schema.field(name).type
        t = t.value_type if pa.types.is_dictionary(t) else t
        if not (_is_string(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            raise UserError(f"{source}: --attr-fields column {name} is {t}; use a string, integer, float or bool "
                            "column")
    for name in raw_attr_fields:
        t = schema.field(name).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            raise UserError(f"{source}: --raw-attr-fields column {name} is {t}; numeric attributes must be integer "
                            "or float (give categorical ones to --attr-fields)")


def check_attr_delimiter(delimiter: str) -> str:
    """The delimiter of attribute values in ``node_table.txt``: one or more characters that no
    number, boolean or table structure uses."""
    if not delimiter or any(ch in '\t\n\r"' or ch.isalnum() or ch in ".+-" for ch in delimiter):
        raise UserError(f"--attr-delimiter {delimiter!r}: give one or more characters other than letters, digits, "
                        "'.', '+', '-', tab, newline or double quote (e.g. ',' or ':')")
    return delimiter


def check_attr_values(items: pa.Table, attr_fields: list[str], source: str, delimiter: str = ",") -> None:
    """String attributes must fit TorchEasyRec's tab-separated, unquoted text tables, and (with a
    delimiter other than the default ``,``) hold no delimiter, which the sampler would split on."""
    for name in attr_fields:
        col = _plain(items[name])
        if not _is_string(col.type):
            continue
        if pc.any(pc.match_substring_regex(col, _STRUCTURAL)).as_py():
            raise UserError(f"{source}: --attr-fields column {name} holds a value with a tab, newline or double "
                            "quote, which TorchEasyRec's text tables cannot carry; clean the column or leave it out")
        if delimiter != "," and pc.any(pc.match_substring(col, delimiter)).as_py():
            value = col.filter(pc.fill_null(pc.match_substring(col, delimiter), False))[0].as_py()
            raise UserError(f"{source}: --attr-fields column {name} holds {value!r}, which contains the "
                            f"--attr-delimiter {delimiter!r}; the sampler would split it: choose another delimiter")


def _categorical(tree: Tree, column: pa.Array, leaf_pos: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> pa.Array:
    string_like = _is_string(column.type)
    codes, dictionary = _dictionary(column, string_like)
    by_leaf = np.empty(tree.num_leaves, dtype=np.int64)
    by_leaf[leaf_pos] = codes
    rank = np.empty(tree.num_leaves, dtype=np.int64)  # item order of each leaf
    rank[leaf_pos] = np.arange(leaf_pos.size)
    start = tree.leaf_start
    modes = segment_modes(by_leaf, rank, lo[:start], hi[:start], max(len(dictionary), 1), string_like)
    node_codes = np.concatenate([modes, by_leaf])
    return dictionary.take(pa.array(node_codes, mask=node_codes < 0))


def _numeric(tree: Tree, column: pa.Array, leaf_pos: np.ndarray) -> pa.Array:
    out_type = column.type if pa.types.is_floating(column.type) and column.type.bit_width >= 32 else pa.float64()
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    values = pc.cast(column, pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
    sums = np.zeros(tree.num_nodes, dtype=np.float64)
    counts = np.zeros(tree.num_nodes, dtype=np.int64)
    start = tree.leaf_start
    sums[start + leaf_pos] = values
    counts[start + leaf_pos] = valid
    for level in range(tree.num_levels - 2, -1, -1):
        a, b = tree.level_offsets[level], tree.level_offsets[level + 1]
        first_child = tree.child_offsets[a:b]
        c0, c1 = tree.level_offsets[level + 1], tree.level_offsets[level + 2]
        sums[a:b] = np.add.reduceat(sums[c0:c1], first_child - c0)
        counts[a:b] = np.add.reduceat(counts[c0:c1], first_child - c0)
    inner = np.divide(sums[:start], counts[:start], out=np.zeros(start), where=counts[:start] > 0)
    means = pa.array(inner, mask=counts[:start] == 0).cast(out_type)
    leaves = np.empty(tree.num_leaves, dtype=np.int64)
    leaves[leaf_pos] = np.arange(leaf_pos.size)
    return pa.concat_arrays([means, pc.cast(column, out_type).take(pa.array(leaves))])


def node_attribute_table(tree: Tree, items: pa.Table, leaf_pos: np.ndarray, id_field: str,
                         attr_fields: list[str], raw_attr_fields: list[str]) -> pa.Table:
    """One row per node in level order: node id, then the aggregated attributes."""
    lo, hi = leaf_ranges(tree) if attr_fields else (None, None)
    columns: dict[str, pa.Array] = {id_field: pa.array(tree.node_ids)}
    for name in attr_fields:
        columns[name] = _categorical(tree, _plain(items[name]), leaf_pos, lo, hi)
    for name in raw_attr_fields:
        columns[name] = _numeric(tree, _plain(items[name]), leaf_pos)
    return pa.table(columns)


def format_values(arr: pa.Array, null: str) -> pa.Array:
    """Values as TorchEasyRec prints them (``str`` of the pyarrow scalar), nulls as ``null``."""
    t = arr.type
    if _is_string(t):
        return pc.cast(arr, pa.string()).fill_null(null)
    if pa.types.is_integer(t):
        return pc.cast(arr, pa.string()).fill_null(null)
    if pa.types.is_boolean(t):
        return pc.if_else(arr, "True", "False").fill_null(null)
    return _float_repr(pc.cast(arr, pa.float64())).fill_null(null)


def _float_repr(arr: pa.Array) -> pa.Array:
    """Python's ``repr`` of float64 values, vectorised.

    Arrow and Python both print the shortest round-trip digits; they differ in layout only.
    Python writes ``x.y`` for 1e-4 <= |x| < 1e16 (``1.0``, not ``1``) and exponents outside;
    so Arrow's text is kept where it is such a plain decimal, gets ``.0`` where it is an
    integer, and the rest (exponents, rare in attributes) goes through ``repr``.
    """
    text = pc.cast(arr, pa.string())
    mag = pc.abs(arr)
    plain = pc.and_(pc.greater_equal(mag, 1e-4), pc.less(mag, 1e16))
    has_dot = pc.match_substring(text, ".")
    has_exp = pc.match_substring(text, "e")
    fixed = pc.and_(plain, pc.invert(has_exp))
    integral = pc.and_(pc.or_(fixed, pc.equal(arr, 0.0)), pc.invert(has_dot))
    out = pc.if_else(integral, pc.binary_join_element_wise(text, ".0", ""), text)
    rest = pc.invert(pc.or_(pc.and_(fixed, has_dot), integral)).fill_null(False)
    idx = np.flatnonzero(rest.to_numpy(zero_copy_only=False))
    if idx.size == 0:
        return out
    fixed_up = out.to_numpy(zero_copy_only=False).astype(object)
    values = arr.to_numpy(zero_copy_only=False)
    fixed_up[idx] = [repr(float(v)) for v in values[idx]]
    return pa.array(fixed_up, pa.string(), mask=arr.is_null().to_numpy(zero_copy_only=False))


def _format_categorical(arr: pa.Array) -> pa.Array:
    """Format each distinct value once (a node column repeats few values)."""
    enc = pc.dictionary_encode(arr, null_encoding="encode")
    return format_values(enc.dictionary, "").take(enc.indices)


def feature_strings(table: pa.Table, attr_fields: list[str], raw_attr_fields: list[str],
                    delimiter: str = ",") -> pa.Array | None:
    """Per node the attribute part of node_table.txt's feature column (None when there are no
    attributes): the categorical values joined by ``delimiter``, then ``,``, then the numeric
    values joined by ``delimiter``, as TorchEasyRec's ``TreeSearch(attr_delimiter=...)`` writes
    them. ``brand 7, shop "a"``, ``price 1.5`` with ``:`` -> ``7:a,1.5``."""
    groups = []
    for fields, render in ((attr_fields, lambda name: _format_categorical(table[name].combine_chunks())),
                           (raw_attr_fields, lambda name: format_values(table[name].combine_chunks(), "0"))):
        parts = [render(name) for name in fields]
        if parts:
            groups.append(pc.binary_join_element_wise(*parts, delimiter))
    if not groups:
        return None
    return groups[0] if len(groups) == 1 else pc.binary_join_element_wise(*groups, ",")
