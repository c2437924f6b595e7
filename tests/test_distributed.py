"""Multi-process training on CPU (gloo): any input shards, every model trains, two "nodes" on
127.0.0.1 equal one node, resume equals an uninterrupted run, and a dying worker is one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from helpers import ROOT, candidate_config, toy_config, write_toy_ctr, write_toy_sequences
from rectool.train import checkpoint as ckpt
from rectool.train.data import Loader, plan_units
from rectool.train.launch import LaunchOptions


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(cfg: dict, where: Path, *flags, env: dict | None = None, wait: bool = True):
    path = where / f"c-{len(list(where.glob('c-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    args = [sys.executable, "-m", "rectool", "train", "--config", str(path), "--device", "cpu", *map(str, flags)]
    full = {**os.environ, "COLUMNS": "400", **(env or {})}
    if not wait:
        return subprocess.Popen(args, cwd=ROOT, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(args, cwd=ROOT, env=full, capture_output=True, text=True, timeout=300)


def _weights(model_dir: Path) -> dict:
    return ckpt.load(ckpt.list_checkpoints(model_dir)[-1])


def _evals(model_dir: Path) -> list[dict]:
    lines = [json.loads(x) for x in (model_dir / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x["kind"] == "eval"]


@pytest.fixture(scope="module")
def one_group(tmp_path_factory):
    """3,000 rows in ONE row group of one file: a rank must still get its share."""
    root = tmp_path_factory.mktemp("one_group")
    write_toy_ctr(root / "train", rows=3000, seed=0, files=1, row_group=3000)
    write_toy_ctr(root / "eval", rows=300, seed=1, files=1, row_group=300)
    return root


# ----------------------------------------------------------------------------- sharding (no processes)


@pytest.mark.parametrize("rows,row_group,world", [(3000, 3000, 2), (5, 5, 4), (40_000, 40_000, 2), (700, 100, 3)])
def test_every_rank_gets_rows_of_any_input(tmp_path, rows, row_group, world):
    write_toy_ctr(tmp_path, rows=rows, files=1, row_group=row_group)
    files = [str(tmp_path / "part-0.parquet")]
    units = plan_units(files, 4 * world)
    assert sum(u.rows for u in units) == rows and len(units) >= min(4 * world, rows)
    from rectool.train.data import _my_units

    for epoch in range(2):
        shares = [sum(u.rows for u in _my_units(units, epoch, 1, True, r, world)) for r in range(world)]
        assert sum(shares) == rows and min(shares) >= 1, shares


def test_fewer_rows_than_ranks_times_batch(tmp_path):
    write_toy_ctr(tmp_path / "t", rows=300, files=1, row_group=300)
    from helpers import toy_config as make
    from rectool.train.config import Config
    from rectool.train.schema import build_input_spec

    cfg = Config.model_validate(make(tmp_path / "t", tmp_path / "m"))
    spec = build_input_spec(cfg, pq.read_schema(tmp_path / "t" / "part-0.parquet"), str(tmp_path / "t"))
    for drop, steps in ((False, 1), (True, 0)):  # 150 rows a rank: one short batch, or none when dropped
        loaders = [Loader(str(tmp_path / "t"), spec, batch_size=256, num_workers=0, seed=1, shuffle=True,
                          shuffle_buffer=1000, drop_remainder=drop, rank=r, world=2) for r in range(2)]
        assert loaders[0].steps_per_epoch(0) == steps
        rows = sum(b["label"].shape[0] for ld in loaders for b in ld.batches(0))
        assert rows == (300 if not drop else 0)


def test_launch_flags_are_checked_in_one_line():
    from rectool.errors import UserError

    for kwargs, message in (({"nnodes": 2}, "also give --node-rank and --master-addr"),
                            ({"nnodes": 2, "node_rank": 2, "master_addr": "h"}, "must be in 0..1"),
                            ({"master_port": 29500}, "--master-port without --master-addr"),
                            ({"master_port": 70000, "master_addr": "h"}, "between 1 and 65535"),
                            ({"rdzv_endpoint": "h:1", "node_rank": 0}, "give one or the other"),
                            ({"nproc": 0}, "--nproc must be at least 1")):
        with pytest.raises(UserError, match=message):
            LaunchOptions(**kwargs)
    assert LaunchOptions(nproc=2).torchrun_args()[-1] == "--standalone"
    assert "--node-rank=1" in LaunchOptions(nnodes=2, node_rank=1, master_addr="h").torchrun_args()


# ----------------------------------------------------------------------------- 2 processes


def test_two_processes_on_one_row_group_with_a_tiny_eval_set(one_group, tmp_path):
    cfg = toy_config(one_group / "train", tmp_path / "model", model="wide_and_deep", eval_input=one_group / "eval")
    cfg["feature_groups"]["wide"] = ["user_id", "item_id", "city"]  # ids only: no dense wide layer is used
    cfg["train"].update({"epochs": 1, "log_every": 2})
    cfg["eval"]["max_rows"] = 100  # a short prefix: may live on one rank only
    proc = _train(cfg, tmp_path, "--nproc", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(tmp_path / "model")
    assert _evals(tmp_path / "model")[-1]["rows"] == 100
    assert _weights(tmp_path / "model")["step"] == 6  # 1,500 rows a rank in batches of 256


@pytest.fixture(scope="module")
def seqs(tmp_path_factory):
    return write_toy_sequences(tmp_path_factory.mktemp("seq"))


@pytest.mark.parametrize("model", ["tdm", "nann"])
def test_pair_scorers_train_on_two_processes_with_a_tiny_eval_set(seqs, tmp_path, model):
    if model == "tdm":
        from rectool.tree.build import init_tree
        from rectool.tree.structure import load_tree

        init_tree(item_input_path=str(seqs / "items"), tree_output_dir=tmp_path / "tree", item_id_field="item_id",
                  cate_id_field="category_id")
        levels = load_tree(tmp_path / "tree").num_levels
        cfg = candidate_config(seqs, tmp_path / "m", "tdm", tree=str(tmp_path / "tree"),
                               layer_num_sample=[0] + [1] * (levels - 1), windows=[1, 2, 2])
    else:
        cfg = candidate_config(seqs, tmp_path / "m", "nann", negatives=5)
    cfg["train"]["max_steps"] = 6
    cfg.setdefault("eval", {})["max_rows"] = 3
    proc = _train(cfg, tmp_path, "--nproc", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _evals(tmp_path / "m")[-1]["rows"] > 0


def test_two_nodes_on_localhost_equal_two_processes_on_one(one_group, tmp_path):
    def config(where: Path) -> dict:
        cfg = toy_config(one_group / "train", where / "model", eval_input=one_group / "eval")
        # the same torch threads per process (a lone process on a "node" would take both cores):
        # the same float sums, so the same weights
        cfg["train"].update({"epochs": 1, "log_every": 2, "threads": 1})
        return cfg

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    assert _train(config(tmp_path / "one"), tmp_path / "one", "--nproc", 2).returncode == 0
    port = _free_port()
    nodes = [_train(config(tmp_path / "two"), tmp_path / "two", "--nnodes", 2, "--node-rank", r, "--master-addr",
                    "127.0.0.1", "--master-port", port, wait=False) for r in (0, 1)]
    outs = [n.communicate(timeout=300) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], [o[1][-2000:] for o in outs]
    assert outs[0][0].strip() == str(tmp_path / "two" / "model") and outs[1][0].strip() == ""
    one, two = _weights(tmp_path / "one" / "model"), _weights(tmp_path / "two" / "model")
    assert one["step"] == two["step"]
    for k, v in one["model"].items():
        assert torch.allclose(v.float(), two["model"][k].float(), atol=1e-6), k


def test_resume_after_a_killed_two_process_run_equals_an_uninterrupted_one(one_group, tmp_path):
    def config(where: Path) -> dict:
        cfg = toy_config(one_group / "train", where / "model")
        cfg["train"].update({"epochs": 2, "log_every": 2, "checkpoint_every": 4})
        cfg["model"]["deep"]["dropout"] = 0.1
        return cfg

    for name in ("whole", "killed"):
        (tmp_path / name).mkdir()
    assert _train(config(tmp_path / "whole"), tmp_path / "whole", "--nproc", 2).returncode == 0
    # rank 1 dies at step 7; rank 0 had checkpointed step 4
    start = time.monotonic()
    proc = _train(config(tmp_path / "killed"), tmp_path / "killed", "--nproc", 2,
                  env={"RECTOOL_FAULT": "train.step:7", "RECTOOL_FAULT_RANK": "1"})
    assert proc.returncode != 0 and time.monotonic() - start < 60
    lines = proc.stderr.strip().splitlines()
    logs = tmp_path / "killed" / "model" / "logs"
    assert lines[-1] == f"error: distributed training stopped, rank 1 failed: killed by SIGKILL (every rank's " \
                        f"output: {logs})", proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and (logs / "launcher.log").is_file()
    proc = _train(config(tmp_path / "killed"), tmp_path / "killed", "--nproc", 2)
    assert proc.returncode == 0 and "resuming from" in proc.stderr, proc.stderr[-3000:]
    whole, resumed = _weights(tmp_path / "whole" / "model"), _weights(tmp_path / "killed" / "model")
    assert whole["step"] == resumed["step"] == 12
    for k, v in whole["model"].items():
        assert torch.allclose(v.float(), resumed["model"][k].float(), atol=1e-6), k


def test_rank_zero_killed_mid_save_leaves_no_temp_checkpoint(one_group, tmp_path):
    cfg = toy_config(one_group / "train", tmp_path / "model")
    cfg["train"].update({"epochs": 1, "checkpoint_every": 2})
    proc = _train(cfg, tmp_path, "--nproc", 2, env={"RECTOOL_FAULT": "checkpoint.before_rename:2",
                                                    "RECTOOL_FAULT_RANK": "0"})
    assert proc.returncode == 1
    assert "rank 0 failed: killed by SIGKILL" in proc.stderr.strip().splitlines()[-1]
    assert not list((tmp_path / "model" / "checkpoints").glob(".*tmp*")), "the launcher removed the half-written file"


def test_a_user_error_on_a_worker_is_one_line(one_group, tmp_path):
    cfg = toy_config(one_group / "train", tmp_path / "model", eval_input=tmp_path / "bad")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "part-0.parquet").write_bytes(b"PAR1 not really parquet")
    cfg["train"]["epochs"] = 1
    proc = _train(cfg, tmp_path, "--nproc", 2)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: distributed training stopped, rank ") and "part-0.parquet" in last
    assert "Traceback" not in proc.stderr
