"""CLI for training: ``train``, ``config check``, ``export``, ``predict``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from rectool import console
from rectool.cli.options import (
    Device,
    DeviceOpt,
    NprocOpt,
    OverwriteOpt,
    QuietOpt,
    comma_list,
    count_option,
    run_sharded,
)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Training config (YAML).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config value: KEY.PATH=VALUE "
                                                                "(repeatable).")]


def train(
    config: ConfigOpt,
    set_: SetOpt = None,
    nproc: Annotated[int, typer.Option("--nproc", help="Processes per machine, launched with "
                                                      "torch.distributed.run.")] = 1,
    nnodes: Annotated[int, typer.Option("--nnodes", help="Machines taking part (run the same command on each).")]
    = 1,
    node_rank: Annotated[int | None, typer.Option("--node-rank", help="This machine's number, 0..nnodes-1.")]
    = None,
    master_addr: Annotated[str | None, typer.Option("--master-addr", help="Address of the machine with "
                                                                           "--node-rank 0.")] = None,
    master_port: Annotated[int | None, typer.Option("--master-port", help="A free port on that machine "
                                                                           "(default 29500).")] = None,
    rdzv_endpoint: Annotated[str | None, typer.Option("--rdzv-endpoint", help="HOST:PORT of a c10d rendezvous "
                                                                               "(instead of --master-addr and "
                                                                               "--node-rank).")] = None,
    device: DeviceOpt = Device.auto,
    resume: Annotated[bool, typer.Option("--resume/--no-resume",
                                         help="Continue from the latest checkpoint in model_dir.")] = True,
    quiet: QuietOpt = False,
) -> None:
    """Train a model from a YAML config; rerunning resumes from the latest checkpoint."""
    from rectool.launch import LaunchOptions, launch, worker_guard
    from rectool.train.config import load_config

    console.set_quiet(quiet)
    cfg = load_config(config, set_ or [])
    where = LaunchOptions(nproc=nproc, nnodes=nnodes, node_rank=node_rank, master_addr=master_addr,
                          master_port=master_port, rdzv_endpoint=rdzv_endpoint)
    if where.distributed and "WORLD_SIZE" not in os.environ:
        _check_data(cfg)  # user errors in one line here, before any worker starts
        from rectool.programs.inputs import warm_kernels

        warm_kernels()
        worker = ["train", "--config", str(config), "--device", device.value, *[a for s in set_ or [] for a in
                                                                                ("--set", s)],
                  "--resume" if resume else "--no-resume", *(["--quiet"] if quiet else [])]
        from rectool.train import checkpoint as ckpt

        model_dir = Path(cfg.train.model_dir)
        # a rank 0 killed mid-save leaves a half-written checkpoint: removed once every worker is gone
        sys.exit(launch(where, worker, model_dir / "logs", after_failure=lambda: ckpt.sweep_temps(model_dir)))
    from rectool.train.trainer import train as run_train

    with worker_guard():
        summary = run_train(cfg, device=device.value, resume=resume)
    if console.rank() == 0:
        console.summary("train", summary)
        console.emit_path(summary["model_dir"])


def _check_data(cfg) -> None:  # noqa: ANN001
    from rectool.tablefile import read_schema
    from rectool.train.data import list_files
    from rectool.train.schema import build_input_spec

    files = list_files(cfg.data.train_input, "data.train_input")
    build_input_spec(cfg, read_schema(files[0]), cfg.data.train_input, files)


def config_check(
    config: Annotated[Path, typer.Argument(help="Training config (YAML).", show_default=False)],
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Validate a training config (and its columns against the training data, when present) without training."""
    from rectool.train.config import load_config

    console.set_quiet(quiet)
    cfg = load_config(config, set_ or [])
    rows = {"config": str(config), "model": cfg.model.type, "features": len(cfg.features),
            "feature_groups": ", ".join(cfg.feature_groups)}
    from rectool.artifacts import expand_paths
    from rectool.errors import UserError
    from rectool.train.data import list_files

    try:
        expand_paths(cfg.data.train_input, "data.train_input")
        present = True
    except UserError:  # data not there yet: the config alone is checked
        present = False
    files = list_files(cfg.data.train_input, "data.train_input") if present else []
    if files:
        from rectool.tablefile import read_schema
        from rectool.train.models import build_model
        from rectool.train.schema import build_input_spec, check_id_ranges

        spec = build_input_spec(cfg, read_schema(files[0]), cfg.data.train_input, files)
        rows["rows_checked"] = check_id_ranges(spec, files)  # ids beyond num_buckets: train would stop on them
        model = build_model(cfg, spec)
        rows["input_columns"] = len(spec.columns)
        rows["parameters"] = sum(p.numel() for p in model.parameters())
    else:
        rows["data"] = "not found; checked the config only"
    console.summary("config ok", rows)
    console.emit_path(config)


def export(
    model_dir: Annotated[Path, typer.Option("--model-dir", help="A train model_dir.")],
    export_dir: Annotated[Path, typer.Option("--export-dir", help="Directory to write.")],
    checkpoint: Annotated[str, typer.Option(help="best, latest or a checkpoint path.")] = "best",
    asset_files: Annotated[list[Path] | None, typer.Option("--asset-files", help="Files to copy into assets/.")]
    = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Export a trained model as a torch.export program with its feature transforms inside."""
    from rectool.train.export import export as run_export

    console.set_quiet(quiet)
    summary = run_export(model_dir, export_dir, checkpoint, asset_files or [], overwrite)
    console.summary("export", summary)
    console.emit_path(export_dir)


def predict(
    model: Annotated[Path, typer.Option("--model", help="An export directory.")],
    input: Annotated[str, typer.Option("--input", help="Parquet dir, file or glob with the model's columns.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Directory to write, or - for Arrow IPC on stdout.")],
    reserved_columns: Annotated[list[str] | None, typer.Option(
        "--reserved-columns", help="Input columns copied to the output (comma separated).")] = None,
    output_columns: Annotated[list[str] | None, typer.Option(
        "--output-columns", help="score, probs, class (comma separated).")] = None,
    batch_size: Annotated[int, count_option(help="Rows per model call.")] = 65_536,
    nproc: NprocOpt = 1,
    device: DeviceOpt = Device.auto,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score a table with an exported model, streaming."""
    from rectool.launch import worker_guard
    from rectool.train.predict import predict as run_predict

    console.set_quiet(quiet)
    run_sharded("predict", nproc, output, overwrite)
    reserved = comma_list(reserved_columns) or ["user_id", "item_id"]
    outputs = comma_list(output_columns) or ["score"]
    with worker_guard():
        summary = run_predict(model, input, output, reserved, outputs, batch_size, overwrite, device.value)
    if console.rank() == 0:
        console.summary("predict", summary)
        if output != "-":
            console.emit_path(output)


def embed(
    model: Annotated[Path, typer.Option("--model", help="An export directory with an item program.")],
    items: Annotated[str, typer.Option("--items", help="Item table (parquet) with the columns the program reads.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write.")],
    id_column: Annotated[str, typer.Option(help="The item id column; a table without item_id gives the program "
                                                "its item ids from it (e.g. adgroup_id).")] = "item_id",
    reserved_columns: Annotated[list[str] | None, typer.Option(
        "--reserved-columns", help="Item columns copied to the output (comma separated).")] = None,
    batch_size: Annotated[int, count_option(help="Items per program call.")] = 65_536,
    program: Annotated[str | None, typer.Option(help="item_tower or item_embedding (default: the one present).")]
    = None,
    nproc: NprocOpt = 1,
    device: DeviceOpt = Device.auto,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compute item embeddings with an exported item program, streaming."""
    from rectool.launch import worker_guard
    from rectool.retrieval.embed import embed as run_embed

    console.set_quiet(quiet)
    run_sharded("embed", nproc, output, overwrite)
    with worker_guard():
        summary = run_embed(model, items, output, id_column, comma_list(reserved_columns), batch_size, program,
                            overwrite, device.value)
    if console.rank() == 0:
        console.summary("embed", summary)
        console.emit_path(output)
