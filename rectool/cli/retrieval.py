"""CLI for retrieval tools: ``hnsw build``, ``hnsw graph`` and ``eval-topk``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rectool import console
from rectool.cli.options import (
    Device,
    DeviceOpt,
    NprocOpt,
    OutputOpt,
    OverwriteOpt,
    QuietOpt,
    SeedOpt,
    choices,
    comma_list,
    count_option,
    parse_list,
    run_sharded,
    whole,
)
from rectool.retrieval.choices import Method, MissingUsers, Space

MethodChoice = choices("MethodChoice", Method)
MissingChoice = choices("MissingChoice", MissingUsers)
SpaceChoice = choices("SpaceChoice", Space)


def hnsw_build(
    input: Annotated[str, typer.Option("--input", "-i", help="Embedding table: item_id, item_emb (dir/file/glob).")],
    output: OutputOpt,
    embedding_field: Annotated[str, typer.Option(help="Column of the embeddings.")] = "item_emb",
    id_field: Annotated[str, typer.Option(help="Column of the item ids.")] = "item_id",
    space: Annotated[SpaceChoice | None, typer.Option(help="ip (inner product), l2 or cosine [ip; --add-to: the "
                                                           "index's].")] = None,
    m: Annotated[int | None, count_option("--m", least=2, help="HNSW M: links per node [16; --add-to: the index's].")]
    = None,
    ef_construction: Annotated[int | None, count_option(help="efConstruction [200; --add-to: the index's].")] = None,
    threads: Annotated[int, count_option(least=0, help="Build threads (0: all cores).")] = 0,
    add_to: Annotated[Path | None, typer.Option(help="Existing index directory: write old + new items to --output.")]
    = None,
    batch_size: Annotated[int, count_option(help="Rows read and added per batch.")] = 65_536,
    seed: SeedOpt = 100,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Build an hnswlib index over an embedding table (or add items to an existing one)."""
    from rectool.retrieval.hnsw import build_index

    console.set_quiet(quiet)
    summary = build_index(input, output, embedding_field=embedding_field, id_field=id_field,
                          space=None if space is None else space.value, m=m, ef_construction=ef_construction,
                          threads=threads, add_to=add_to, overwrite=overwrite, batch_size=batch_size, seed=seed)
    console.summary("hnsw build", {"output": str(output), **summary})
    console.emit_path(output)


def hnsw_graph(
    index: Annotated[Path, typer.Option("--index", help="Index directory written by hnsw build.")],
    output: OutputOpt,
    levels: Annotated[str, typer.Option(help="Levels whose neighbour lists to extract, e.g. 0,1.")] = "0,1",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Extract the HNSW graph (levels, CSR neighbour lists, enter points) for NANN search."""
    from rectool.retrieval.graph import graph_from_index

    console.set_quiet(quiet)
    summary = graph_from_index(index, output, parse_list(levels, "--levels", int, "a level number (e.g. 0,1)"),
                               overwrite)
    console.summary("hnsw graph", {"output": str(output), **{k: v for k, v in summary.items() if k != "levels"},
                                   "levels": ",".join(str(x) for x in summary["levels"])})
    console.emit_path(output)


def eval_topk(
    recall_path: Annotated[str, typer.Option(help="Recall file: user_id, item_ids, scores (best first).")],
    truth_path: Annotated[str, typer.Option(help="Truth table: user_id, item_ids (or long form user_id, item_id).")],
    output: OutputOpt,
    k_list: Annotated[str, typer.Option(help="Cut-offs K, comma-separated.")] = "10,20,50,200",
    brute_path: Annotated[str | None, typer.Option(help="Exact-search recall file for the same users: adds "
                                                        "recall-delta and coverage of its top-K.")] = None,
    items: Annotated[str | None, typer.Option(help="Item table (item_id) giving the catalogue for coverage.")]
    = None,
    n_items: Annotated[int | None, count_option(help="Catalogue size for coverage (instead of --items).")] = None,
    missing_users: Annotated[MissingChoice, typer.Option(help="Truth users absent from the recall file: error, or "
                                                              "zero (count them with an empty list).")] = "error",
    truth_column: Annotated[str | None, typer.Option("--truth-column", help="The truth table's item column when it "
                                                     "is not item_ids/item_id: a list column (list form) or an "
                                                     "integer column (long form).")] = None,
    plot: Annotated[bool, typer.Option("--plot", help="Also write recall_at_k.png (recall@K against K).")] = False,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Precision, recall, F-measure, hit rate, NDCG, MRR and coverage at several K."""
    from rectool.retrieval.metrics import evaluate_topk

    console.set_quiet(quiet)
    ks = parse_list(k_list, "--k-list", int, "", error="give cut-offs separated by commas, e.g. 10,20,50,200")
    result = evaluate_topk(recall_path, truth_path, output, k_list=ks, brute_path=brute_path, n_items=n_items,
                           items=items, missing_users=MissingChoice(missing_users).value,
                           truth_column=truth_column, plot=plot, overwrite=overwrite)
    rows = {"output": str(output), "users": result["users"], "catalogue": result["catalog_items"]}
    if "mean_items_scored" in result:
        rows["share scored"] = result["share_scored"]
    console.summary("eval-topk", rows)
    console.emit_path(output)


def retrieve(
    method: Annotated[MethodChoice, typer.Option("--method", help="hnsw, brute, tdm or nann.")],
    model: Annotated[Path, typer.Option("--model", help="An export: towers (two_tower, mind) or a pair scorer "
                                                        "(tdm, nann).")],
    users: Annotated[str, typer.Option("--users", help="Users and the columns the model reads (next-item "
                                                       "test/inputs).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Recalls directory to write.")],
    topk: Annotated[int, count_option("--topk", help="Items per user (recall_num).")] = 200,
    index: Annotated[str | None, typer.Option("--index", help="hnsw / nann: an hnsw build output (nann: or an "
                                                              "hnsw graph output).")] = None,
    items: Annotated[str | None, typer.Option("--items", help="brute: the item embedding table (towers) or item "
                                                              "table (pair scorers).")] = None,
    tree: Annotated[str | None, typer.Option("--tree", help="tdm: the tree directory.")] = None,
    ef: Annotated[str | None, typer.Option("--ef", help="hnsw: search ef; nann: ef of levels 2,1,0 "
                                                        "[100,200,400].")] = None,
    rounds: Annotated[str | None, typer.Option("--rounds", help="nann: rounds on levels 2,1,0 [1,1,3].")] = None,
    expand: Annotated[int | None, count_option("--expand", help="nann: nodes expanded per user and round, best "
                                                                "first [all not yet expanded].")] = None,
    beam: Annotated[int | None, count_option("--beam", help="tdm: nodes kept per level [2 x topk].")] = None,
    exclude_seen: Annotated[bool, typer.Option("--exclude-seen/--keep-seen", help="Never return the user's "
                                                                                  "input items.")] = True,
    exclude_column: Annotated[str | None, typer.Option("--exclude-column", help="List column of items to leave "
                                                                                "out [seen_item_ids].")] = None,
    reserved_columns: Annotated[list[str] | None, typer.Option("--reserved-columns", help="User columns copied to "
                                                                                         "the output.")] = None,
    repeat_bonus: Annotated[float | None, typer.Option("--repeat-bonus", help="Towers: add this to the score of "
                                                       "each item in the user's history (replaces a model.repeat "
                                                       "model's learned bonus; 0: off).")] = None,
    repeat_column: Annotated[str | None, typer.Option("--repeat-column", help="The history list column (item ids) "
                                                      "for --repeat-bonus and --item-similarity [the model's "
                                                      "repeat history].")] = None,
    item_to_item: Annotated[float | None, typer.Option("--item-to-item", help="brute/hnsw, two_tower: mix W of a soft "
                                                       "maximum over the user tower's one-item queries (each "
                                                       "history item alone) into u·v [0: off].")] = None,
    item_similarity: Annotated[float | None, typer.Option("--item-similarity", help="brute/hnsw, two_tower: mix W of "
                                                          "a soft maximum over the history items' own item vectors "
                                                          "into u·v [0: off].")] = None,
    item_to_item_temperature: Annotated[float, typer.Option("--item-to-item-temperature", help="The soft maxima's "
                                                            "temperature.")] = 0.05,
    mix_candidates: Annotated[int, count_option("--mix-candidates", help="hnsw with --item-to-item/--item-"
                                                                         "similarity: index candidates per history "
                                                                         "item's view (the user vector's: --topk), "
                                                                         "rescored exactly.")] = 20,
    batch_size: Annotated[int, count_option("--batch-size", help="Users per search batch.")] = 256,
    threads: Annotated[int, count_option("--threads", least=0, help="hnsw search threads [all cores].")] = 0,
    nproc: NprocOpt = 1,
    device: DeviceOpt = Device.auto,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Each user's top-K items: HNSW or exact search of user vectors, or TDM / NANN beam search with the model."""
    from rectool.launch import worker_guard
    from rectool.retrieval.options import MAX_SEARCH, RetrieveOptions
    from rectool.retrieval.retrieve import retrieve as run_retrieve

    console.set_quiet(quiet)
    run_sharded("retrieve", nproc, output, overwrite)

    def counts(flag: str, text: str | None, least: int) -> list[int]:
        return parse_list(text, flag, whole(least, MAX_SEARCH), "", error=f"give whole numbers of at least {least} "
                          f"(and at most {MAX_SEARCH}), comma-separated (e.g. 100,200,400)")

    with worker_guard():
        options = RetrieveOptions.of(
            method=method.value, topk=topk, index=index, items=items, tree=tree, ef=counts("--ef", ef, 1),
            rounds=counts("--rounds", rounds, 0), expand=expand, beam=beam, exclude_seen=exclude_seen,
            exclude_column=exclude_column, reserved_columns=comma_list(reserved_columns),
            repeat_bonus=repeat_bonus, repeat_column=repeat_column, item_to_item=item_to_item,
            item_similarity=item_similarity, item_to_item_temperature=item_to_item_temperature,
            mix_candidates=mix_candidates, batch_size=batch_size, threads=threads, device=device.value)
        result = run_retrieve(options, model, users, output, overwrite=overwrite)
    if console.rank() == 0:
        console.summary(f"retrieve {method.value}", result)
        console.emit_path(output)
