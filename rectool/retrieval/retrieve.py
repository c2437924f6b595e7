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

Output (recall format, ``rectool.retrieval.formats``): ``user_id, item_ids list<int64>,
scores list<float32>, n_scored int64`` (the items the model scored for the user; for
towers with an index, not counted) + ``--reserved-columns``.

    rectool retrieve --method nann --model out/nann_export --index out/nann_index \\
        --users out/seq/test/inputs --output out/recalls/nann --topk 200
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch

from rectool import console
from rectool.artifacts import open_dataset, require_columns, write_meta
from rectool.badinput import count_rows, read_batches, read_table
from rectool.errors import UserError
from rectool.programs.device import device_here, program_on
from rectool.programs.inputs import LEN_SUFFIX, InputSpec, to_tensors
from rectool.programs.load import load_program
from rectool.programs.manifest import ExportManifest
from rectool.retrieval.formats import USER_ID, Ragged, RecallWriter, TopK, int_column, union_topk
from rectool.retrieval.item_to_item import ItemToItem, MixedScores
from rectool.retrieval.repeat import RepeatBonus
from rectool.sharding import Shard, sharded_dir, sum_rows

Method = Literal["hnsw", "brute", "tdm", "nann"]
PAIR_CHUNK = 4_096  # (user, item) pairs per model call: activations [pairs, history, units] stay in cache
RUN_WIDTH = 1_024   # candidates of one user per row of a model call (longer runs are split)


class PairScorer:
    """The ``scorer(user_index, candidate) -> scores`` callback over an exported pair program.

    The program scores a [rows, T] candidate matrix, one user per row, so each user's history
    is embedded once for all its candidates: the flat pairs the searches pass (grouped by
    user: consecutive pairs of one user form a run) are packed into such matrices, runs
    longer than ``RUN_WIDTH`` split, rows padded to the widest run of the call.
    ``candidate_ids(values)`` turns what the search passes (tree node ids, graph nodes, item
    rows) into the ids the program's candidate column holds. With ``exclude`` (item ids per
    user), an excluded item scores -inf, so a search ranks it below every other candidate.
    ``matrix=False`` serves exports written before scorers took a candidate matrix (one
    candidate per row, [B] -> [B]).
    """

    def __init__(self, program: torch.nn.Module, users: dict[str, torch.Tensor], column: str,
                 candidate_ids: Any = None, exclude: Ragged | None = None, matrix: bool = True) -> None:
        self.program, self.users, self.column, self.matrix = program, users, column, matrix
        self.candidate_ids = candidate_ids or (lambda v: v)
        self.exclude = None
        if exclude is not None and len(exclude.values):
            from rectool.retrieval.kernels import sort_rows

            self.exclude = (exclude.offsets, sort_rows(exclude.offsets, exclude.values))

    def __call__(self, user_index: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        user_index = np.asarray(user_index, dtype=np.int64)
        ids = np.asarray(self.candidate_ids(np.asarray(candidates)), dtype=np.int64)
        out = np.empty(len(user_index), dtype=np.float32)
        starts, lengths = _runs(user_index, RUN_WIDTH if self.matrix else 1)
        with torch.inference_mode():
            lo = 0
            while lo < len(starts):
                hi = _rows_per_call(lengths, lo, PAIR_CHUNK)
                start, length = starts[lo:hi], lengths[lo:hi]
                width = int(length.max())
                column = np.arange(width)
                valid = column[None, :] < length[:, None]
                pos = np.where(valid, start[:, None] + column[None, :], start[:, None])  # padding repeats a pair
                x = {k: v.index_select(0, torch.from_numpy(user_index[start])) for k, v in self.users.items()}
                x[self.column] = torch.from_numpy(ids[pos] if self.matrix else ids[start])
                out[pos[valid]] = self.program(x).float().numpy().reshape(pos.shape)[valid]
                lo = hi
        if self.exclude is not None:
            from rectool.retrieval.kernels import mask_listed

            mask_listed(out, user_index, ids, *self.exclude)
        return out


def _runs(user_index: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of equal consecutive users, split at ``width`` pairs."""
    if len(user_index) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    bounds = np.flatnonzero(np.diff(user_index)) + 1
    starts = np.concatenate([[0], bounds])
    lengths = np.diff(np.concatenate([starts, [len(user_index)]]))
    pieces = (lengths + width - 1) // width
    piece_rank = np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)  # 0, 1, .. within a run
    first = np.repeat(starts, pieces) + width * piece_rank
    end = np.repeat(starts + lengths, pieces)
    return first.astype(np.int64), np.minimum(end - first, width).astype(np.int64)


def _rows_per_call(lengths: np.ndarray, lo: int, budget: int) -> int:
    """The end of the rows from ``lo`` whose padded matrix (rows x widest) stays within ``budget`` pairs."""
    widest = np.maximum.accumulate(lengths[lo:lo + budget])  # every row holds >= 1 pair
    fits = np.flatnonzero(widest * np.arange(1, len(widest) + 1) <= budget)
    return lo + (int(fits[-1]) + 1 if len(fits) else 1)


MAX_SEARCH = 2**31 - 1  # hnswlib and the NANN kernels take these as C ints


def _counts(text: str | None, flag: str, least: int) -> list[int]:
    """Comma-separated whole numbers of at least ``least`` ("100,200,400"), or a one-line error."""
    try:
        values = [int(v) for v in text.split(",")] if text else []
    except ValueError:
        values = [least - 1]
    if any(not least <= v <= MAX_SEARCH for v in values):
        raise UserError(f"{flag} {text}: give whole numbers of at least {least} (and at most {MAX_SEARCH}), "
                        "comma-separated (e.g. 100,200,400)")
    return values


def _parts(model: Path) -> dict:
    meta = model / "_meta.json"
    return json.loads(meta.read_text()).get("parts", {}) if meta.is_file() else {}


def _item_ids(items: str | None, tree: str | None, index: str | None) -> np.ndarray:
    """The catalogue a pair scorer's brute force scores: --items, the tree's leaves, or the index's ids."""
    if items is not None:
        ds = open_dataset(items, "--items")
        require_columns(ds.schema, ["item_id"], items)
        return np.unique(int_column(read_table(ds, f"--items {items}", columns=["item_id"])["item_id"],
                                    f"--items {items}", "item_id"))
    if tree is not None:
        from rectool.tree.structure import load_tree

        return np.asarray(load_tree(tree).leaf_item_ids, dtype=np.int64)
    if index is not None:
        return np.load(Path(index) / "ids.npy").astype(np.int64)
    raise UserError("--method brute with a pair scorer needs the catalogue: --items, --tree or --index")


def _exclusions(table: pa.Table, column: str | None) -> Ragged | None:
    if column is None:
        return None
    arr = table.column(column).combine_chunks()
    lists = arr.fill_null([]) if arr.null_count else arr
    offsets = np.asarray(lists.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    values = np.asarray(lists.values.to_numpy(zero_copy_only=False), dtype=np.int64)
    return Ragged(offsets - offsets[0], values[offsets[0]:offsets[-1]])


def _filter(topk: TopK, exclude: Ragged | None, k: int) -> TopK:
    """Drop excluded items from over-fetched lists, keep the k best (the kernel hnsw search uses)."""
    if exclude is None:
        return TopK(topk.item_ids[:, :k], topk.scores[:, :k], np.minimum(topk.lengths, k), topk.n_scored)
    from rectool.retrieval.kernels import filter_rows, sort_rows

    ids, scores, lengths = filter_rows(topk.item_ids, topk.scores.astype(np.float32, copy=False), k,
                                       exclude.offsets, sort_rows(exclude.offsets, exclude.values))
    return TopK(ids, scores, lengths, topk.n_scored)


def retrieve(method: Method, model: Path, users: str, output: str | os.PathLike[str], *, topk: int = 200,
             index: str | None = None, items: str | None = None, tree: str | None = None, ef: str | None = None,
             rounds: str | None = None, expand: int | None = None, beam: int | None = None, exclude_seen: bool = True,
             exclude_column: str | None = None, reserved_columns: list[str] | None = None, batch_size: int = 256,
             threads: int = 0, overwrite: bool = False, repeat_bonus: float | None = None,
             repeat_column: str | None = None, item_to_item: float | None = None,
             item_similarity: float | None = None, item_to_item_temperature: float = 0.05,
             device: str = "auto") -> dict[str, Any]:
    """Each user's top ``topk`` items; under a sharded job (``rectool.sharding``) this process
    retrieves for its share of the users."""
    shard = Shard.from_env()
    on = device_here(device)
    if method not in ("hnsw", "brute", "tdm", "nann"):
        raise UserError(f"--method {method}: choose hnsw, brute, tdm or nann")
    if topk < 1:
        raise UserError("--topk must be at least 1")
    model = Path(model)
    manifest = ExportManifest.read(model)
    parts = {name: part.model_dump() for name, part in manifest.parts.items()}
    towers = "user_tower" in parts
    if not towers and "scorer" not in parts:
        raise UserError(f"--model {model}: has neither a user_tower nor a scorer program; export a retrieval model")
    if method in ("tdm", "nann") and towers:
        raise UserError(f"--method {method} scores pairs with the model; export a tdm or nann model (this export "
                        "has towers: use --method hnsw or brute)")
    if method == "hnsw" and not towers:
        raise UserError("--method hnsw searches user vectors; this export is a pair scorer: use --method nann, tdm "
                        "or brute")
    program, spec = load_program(model, "user_tower" if towers else "scorer", manifest)
    ds = open_dataset(users, "--users")
    names = ds.schema.names
    column = exclude_column or ("seen_item_ids" if "seen_item_ids" in names else None)
    if exclude_seen and exclude_column is None and column is None:
        console.warn(f"--users {users} has no seen_item_ids column: nothing is excluded")
    column = column if exclude_seen else None
    reserved = [c for c in (reserved_columns or []) if c != USER_ID]
    candidate = None if towers else parts["scorer"].get("candidate")
    matrix = not towers and parts["scorer"].get("candidate_shape") == "[B, T]"  # older exports: one per row
    user_spec = InputSpec(columns=[c for c in spec.columns if c.name != candidate])
    require_columns(ds.schema, [USER_ID, *user_spec.names, *reserved, *([column] if column else [])], users,
                    hint="give the test inputs of a next-item dataset")
    if expand is not None and expand < 1:
        raise UserError("--expand must be at least 1 (or left out: expand every node not expanded yet)")
    if not towers and (repeat_bonus is not None or repeat_column is not None):
        raise UserError("--repeat-bonus applies to tower exports (two_tower); this export is a pair scorer")
    mix = ItemToItem.resolve(item_to_item, item_similarity, item_to_item_temperature)
    list_columns = [c.name for c in user_spec.columns if c.kind.endswith("_list")]
    history_column = None
    if mix is not None and mix.similarity:  # --repeat-column names the item-id history here without a bonus
        learned = RepeatBonus.from_part(parts.get("user_tower", {}))
        history_column = repeat_column or (learned.column if learned else None)
        if history_column is None or history_column not in list_columns:
            raise UserError(f"--item-similarity: name the user's item-id history with --repeat-column (a list "
                            f"column the user tower reads: {', '.join(list_columns) or 'it reads none'})")
        repeat_column = repeat_column if repeat_bonus is not None else None
    repeat = RepeatBonus.resolve(parts["user_tower"], repeat_bonus, repeat_column, list_columns) if towers else None
    if repeat is not None and parts["user_tower"].get("output", "").startswith("interest"):
        raise UserError("--repeat-bonus needs one vector per user (two_tower); this export has several interests "
                        "per user (mind)")
    if mix is not None and not (towers and method == "brute"):
        raise UserError("--item-to-item / --item-similarity mix soft maxima into a tower's scores, which an index "
                        "cannot search: use --method brute with a two_tower export")
    if mix is not None and parts["user_tower"].get("output", "").startswith("interest"):
        raise UserError("--item-to-item / --item-similarity need one vector per user (two_tower); this export has "
                        "several interests per user (mind)")
    engine = _Engine(method, towers, program_on(program, on), candidate, topk, index, items, tree, ef, rounds, expand,
                     beam, threads, matrix, repeat, mix, history_column, on)
    ds = shard.dataset(ds)
    total = count_rows(ds, f"--users {users}")
    columns = list(dict.fromkeys([USER_ID, *user_spec.names, *reserved, *([column] if column else [])]))
    with sharded_dir(output, overwrite, shard, merge=_merge_meta) as tmp, console.Stopwatch() as sw:
        writer = RecallWriter(tmp, n_scored=True, extra_fields=[ds.schema.field(c) for c in reserved])
        scored = 0
        with console.progress(f"retrieve {method}", total=total) as bar:
            for batch in read_batches(ds, f"--users {users}", columns=columns, batch_size=batch_size):
                if batch.num_rows == 0:
                    continue
                table = pa.Table.from_batches([batch])
                x = to_tensors(table, user_spec, source=str(users), with_label=False)
                excl = _exclusions(table, column)
                result = engine.search(x, excl)
                n_scored = result.n_scored if result.n_scored is not None else np.zeros(len(result), np.int64)
                scored += int(n_scored.sum())
                writer.write(int_column(table[USER_ID], f"--users {users}", USER_ID),
                             TopK(result.item_ids, result.scores, result.lengths, n_scored),
                             {c: table.column(c).combine_chunks() for c in reserved})
                bar.advance(batch.num_rows)
        writer.close()
        catalogue = engine.catalogue_size
        write_meta(tmp, kind="recalls", inputs=[str(users), str(model)] + [p for p in (index, items, tree) if p],
                   rows=writer.rows, method=method, topk=topk, exclude=column or "none",
                   mean_scored_per_user=scored / max(writer.rows, 1), scored=scored, catalogue=catalogue,
                   search_seconds=round(time.perf_counter() - sw.start, 3),
                   repeat_bonus=None if repeat is None else {"column": repeat.column, "bonus": repeat.bonus.tolist()},
                   item_to_item=None if mix is None else {"item_to_item": mix.item_to_item,
                                                          "item_similarity": mix.similarity,
                                                          "temperature": mix.temperature})
    rows, scored = int(shard.sum(writer.rows)), shard.sum(scored)
    return {"output": os.fspath(output), "method": method, "users": rows, "topk": topk,
            "mean_items_scored": round(scored / max(rows, 1), 1),
            "share_of_catalogue_scored": round(scored / max(rows, 1) / catalogue, 5) if catalogue else "-",
            "users_per_s": round(rows / max(sw.seconds, 1e-9), 1), "processes": shard.world, "device": str(on)}


def _merge_meta(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """The processes' metas of a sharded retrieve: users and scored items add up, the slowest search counts."""
    merged = sum_rows(metas)
    merged["scored"] = sum(m["scored"] for m in metas)
    merged["mean_scored_per_user"] = merged["scored"] / max(merged["rows"], 1)
    merged["search_seconds"] = max(m["search_seconds"] for m in metas)
    return merged


class _Engine:
    """One method's search over user batches; loads the index, tree, graph or item table once."""

    def __init__(self, method: str, towers: bool, program: torch.nn.Module, candidate: str | None, topk: int,
                 index: str | None, items: str | None, tree: str | None, ef: str | None, rounds: str | None,
                 expand: int | None, beam: int | None, threads: int, matrix: bool,
                 repeat: RepeatBonus | None = None, item_to_item: ItemToItem | None = None,
                 history_column: str | None = None, device: torch.device | None = None) -> None:
        self.device = device or torch.device("cpu")
        self.method, self.towers, self.program, self.candidate, self.k = method, towers, program, candidate, topk
        self.expand, self.matrix, self.repeat, self.item_to_item = expand, matrix, repeat, item_to_item
        self.history_column = history_column
        self.vectors = None  # item-vector lookup: the repeat bonus and --item-similarity
        self.catalogue_size = 0
        ef_values = _counts(ef, "--ef", 1)
        if method == "hnsw":
            from rectool.retrieval.hnsw import load_index

            if index is None:
                raise UserError("--method hnsw needs --index (from rectool hnsw build)")
            self.index = load_index(index, threads=threads)
            self.ef = ef_values[0] if ef_values else max(topk, 100)
            self.catalogue_size = self.index.count
            if repeat is not None:
                from rectool.retrieval.repeat import index_lookup

                self.vectors = index_lookup(self.index)
        elif method == "brute" and towers:
            from rectool.retrieval.formats import open_embeddings

            if items is None:
                raise UserError("--method brute with a two-tower model needs --items (an embedding table from embed)")
            source = open_embeddings(items)
            ids, vecs = zip(*source.batches(), strict=True)
            self.item_ids, self.item_vecs = np.concatenate(ids), np.concatenate(vecs)
            self.catalogue_size = len(self.item_ids)
            # on a GPU: the item matrix lives there, each user batch is one product + torch.topk
            self.items_on_device = None if self.device.type == "cpu" or repeat is not None or \
                item_to_item is not None else torch.from_numpy(np.ascontiguousarray(self.item_vecs)).to(self.device)
            if repeat is not None or history_column is not None:
                from rectool.retrieval.repeat import table_lookup

                self.vectors = table_lookup(self.item_ids, self.item_vecs)
        elif method == "brute":
            self.item_ids = _item_ids(items, tree, index)
            self.catalogue_size = len(self.item_ids)
        elif method == "tdm":
            from rectool.tree.structure import load_tree

            if tree is None:
                raise UserError("--method tdm needs --tree (from rectool tree init / tree cluster)")
            self.tree = load_tree(tree)
            self.beam = beam or 2 * topk
            self.catalogue_size = int(self.tree.num_leaves)
        else:
            from rectool.retrieval.graph import extract_graph, load_graph

            if index is None:
                raise UserError("--method nann needs --index (an hnsw build or hnsw graph output)")
            meta = json.loads((Path(index) / "_meta.json").read_text()) if (Path(index) / "_meta.json").is_file() \
                else {}
            self.graph = load_graph(index) if meta.get("kind") == "hnsw_graph" else extract_graph(index)
            self.ef = tuple(ef_values) if ef_values else (100, 200, 400)
            self.rounds = tuple(_counts(rounds, "--rounds", 0)) or (1, 1, 3)
            if len(self.ef) != 3 or len(self.rounds) != 3:
                raise UserError("--ef and --rounds take three values for NANN: levels 2, 1, 0 (e.g. 100,200,400)")
            self.catalogue_size = len(self.graph.ids)

    def search(self, x: dict[str, torch.Tensor], exclude: Ragged | None) -> TopK:
        n = next(iter(x.values())).shape[0]
        if self.towers:
            with torch.inference_mode():
                vectors = self.program(x).float().numpy()
            interests = [vectors] if vectors.ndim == 2 else [vectors[:, i] for i in range(vectors.shape[1])]
            mix = None
            if self.item_to_item is not None:
                c = self.history_column
                history = None if c is None else (x[c].numpy(), x[c + LEN_SUFFIX].numpy())
                mix = self.item_to_item.scores(self.program, x, vectors, history, self.vectors)
            if self.repeat is not None:
                from rectool.retrieval.repeat import scored_queries, search_with_repeat

                history, bonus = self.repeat.history(x)
                space = self.index.space if self.method == "hnsw" else "ip"
                result = search_with_repeat(lambda excl: self._plain(vectors, excl, mix),
                                            scored_queries(space, vectors), history, bonus, self.vectors, exclude,
                                            self.k, mix)
            else:
                found = [self._plain(q, exclude, mix) for q in interests]
                result = found[0] if len(found) == 1 else union_topk(found, self.k)
            counted = self.catalogue_size * len(interests) if self.method == "brute" else None
            return TopK(result.item_ids, result.scores, result.lengths,
                        None if counted is None else np.full(n, counted, np.int64))
        return self._pairs(x, n, exclude)

    def _plain(self, queries: np.ndarray, exclude: Ragged | None, mix: MixedScores | None = None) -> TopK:
        """Top-k items by u·v (or ``mix``'s score) for one vector per user: the index, or every item vector."""
        if self.method == "hnsw":
            from rectool.retrieval.hnsw import hnsw_search

            return hnsw_search(self.index, queries, self.k, ef=self.ef, exclude=exclude)
        from rectool.retrieval.brute import brute_search_dot, brute_search_dot_torch

        if self.items_on_device is not None:
            return brute_search_dot_torch(queries, self.items_on_device, self.k, item_ids=self.item_ids,
                                          exclude=exclude)
        return brute_search_dot(queries, self.item_vecs, self.k, item_ids=self.item_ids, exclude=exclude,
                                progress=False, mix=mix)

    def _pairs(self, x: dict[str, torch.Tensor], n: int, exclude: Ragged | None) -> TopK:
        """A pair scorer's search: brute force, NANN or TDM."""
        if self.method == "brute":
            from rectool.retrieval.brute import brute_search

            scorer = PairScorer(self.program, x, self.candidate, lambda rows: self.item_ids[rows],
                                matrix=self.matrix)
            return brute_search(scorer, n, len(self.item_ids), self.k, item_ids=self.item_ids, exclude=exclude,
                                max_pairs=PAIR_CHUNK, progress=False)
        if self.method == "nann":
            from rectool.retrieval.nann_search import nann_search

            scorer = PairScorer(self.program, x, self.candidate, lambda nodes: self.graph.ids[nodes],
                                matrix=self.matrix)
            return nann_search(self.graph, n, scorer, recall_num=self.k, ef=self.ef, rounds=self.rounds,
                               expand=self.expand, exclude=exclude, batch_size=n, progress=False)
        from rectool.tree.beam import beam_search

        # excluded items score -inf: the leaf level's top-k passes over them without a wider beam
        scorer = PairScorer(self.program, x, self.candidate, exclude=exclude, matrix=self.matrix)
        res = beam_search(self.tree, scorer, n, self.k, beam=self.beam)
        lengths = (res.item_ids >= 0).sum(1).astype(np.int64)
        return _filter(TopK(res.item_ids, res.scores, lengths, res.nodes_scored.astype(np.int64)), exclude, self.k)
