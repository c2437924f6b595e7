"""Tree node attributes as part of a node's embedding (TDM's ``model.node_features``).

TorchEasyRec's TDM feeds each sampled node's attribute features into the model, not only its
id. ``tree init`` / ``tree cluster`` with ``--attr-fields`` / ``--raw-attr-fields`` write every
node's attributes to ``node_feature/`` (a leaf keeps its item's values, a non-leaf node takes
the mode / mean over its leaves: ``rectool.tree.attrs``). This module turns the chosen columns
into one vector per node id, added to the node's id embedding:

    categorical column (ints, strings, booleans)  -> its own embedding table (0 = null / unknown)
    float column                                   -> standardised (nulls -> the mean), then one
                                                      linear map of all float columns to D

Inputs: the ``node_feature/`` table (first column: the node id) and the column names.
Output: ``NodeAttributes(ids)`` -> [..., D] for node ids of any shape; ids the table does not
hold (an item outside the tree) get zeros. The tables live in buffers, so exports carry them.

Example: ``model: {type: tdm, tree: out/tree, node_features: [category_id, price]}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import nn

from rectool.errors import UserError


def read_node_features(tree: str | Path, columns: list[str]) -> pa.Table:
    """The node id column and ``columns`` of ``<tree>/node_feature``, or a one-line error."""
    path = Path(tree) / "node_feature"
    if not path.is_dir():
        raise UserError(f"model.node_features: {path} does not exist; build the tree with tree init "
                        "--attr-fields/--raw-attr-fields (or tree cluster with them)")
    table = pq.read_table(path)
    missing = [c for c in columns if c not in table.column_names[1:]]
    if missing:
        raise UserError(f"model.node_features: {path} has no column {', '.join(missing)} "
                        f"(it has: {', '.join(table.column_names[1:]) or 'no attributes'})")
    return table.select([table.column_names[0], *columns])


class NodeAttributes(nn.Module):
    def __init__(self, table: pa.Table, dim: int) -> None:
        super().__init__()
        ids = table.column(0).to_numpy().astype(np.int64)
        order = np.argsort(ids, kind="stable")
        self.register_buffer("node_ids", torch.from_numpy(ids[order].copy()))
        self.categorical = nn.ModuleDict()
        numeric = []
        for name in table.column_names[1:]:
            column = table.column(name).combine_chunks()
            if pa.types.is_floating(column.type):
                values = column.to_numpy(zero_copy_only=False).astype(np.float64)
                finite = np.isfinite(values)
                mean = values[finite].mean() if finite.any() else 0.0
                std = values[finite].std() if finite.any() else 1.0
                numeric.append(np.where(finite, (values - mean) / (std or 1.0), 0.0)[order])
                continue
            encoded = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)
            codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
            self.register_buffer(f"codes_{name}", torch.from_numpy(codes[order].copy()))
            self.categorical[name] = nn.Embedding(len(encoded.dictionary) + 1, dim, padding_idx=0)
        self.has_numeric = bool(numeric)
        self.register_buffer("numeric", torch.from_numpy(np.stack(numeric, 1).astype(np.float32)) if numeric
                             else torch.zeros(len(ids), 0))
        self.project = nn.Linear(len(numeric), dim, bias=False) if numeric else None
        self.dim = dim

    def forward(self, node_ids: torch.Tensor) -> torch.Tensor:
        """[..., D] attribute vectors of node ids [...] (zeros for ids outside the table)."""
        pos = torch.searchsorted(self.node_ids, node_ids.contiguous()).clamp(max=self.node_ids.shape[0] - 1)
        found = self.node_ids[pos] == node_ids
        out = torch.zeros(*node_ids.shape, self.dim, device=node_ids.device)
        for name, table in self.categorical.items():
            out = out + table(torch.where(found, getattr(self, f"codes_{name}")[pos], 0))
        if self.project is not None:
            out = out + self.project(self.numeric[pos] * found.unsqueeze(-1).to(self.numeric.dtype))
        return out
