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
from rectool.launch import LaunchOptions
from rectool.train import checkpoint as ckpt
from rectool.train.data import Loader, plan_units


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


SHIPPED = ["deepfm_tianchi", "wide_and_deep_tianchi", "din_tianchi", "dcn_v2_tianchi"]


def _two_nodes_config(one_group: Path, where: Path) -> dict:
    cfg = toy_config(one_group / "train", where / "model", eval_input=one_group / "eval")
    # the same torch threads per process (a lone process on a "node" would take both cores):
    # the same float sums, so the same weights
    cfg["train"].update({"epochs": 1, "log_every": 2, "threads": 1})
    return cfg


def _resume_config(one_group: Path, where: Path) -> dict:
    cfg = toy_config(one_group / "train", where / "model")
    cfg["train"].update({"epochs": 2, "log_every": 2, "checkpoint_every": 4})
    cfg["model"]["deep"]["dropout"] = 0.1
    return cfg


@pytest.fixture(scope="module")
def batch(seqs, tiny_ranking, one_group, tmp_path_factory):
    """Every model below trained on 2 ranks in ONE torchrun job (``tests/dist_batch.py``): the shipped
    ranking examples as they are (sparse_adam, their features) on the samples `dataset` makes, TDM and
    NANN with a 3-row eval set, DeepFM on 6,000 rows with a 2,000-row eval set, and the uninterrupted
    references of the two-node and the resume tests."""
    from rectool.train.config import apply_overrides
    from rectool.tree.build import init_tree
    from rectool.tree.structure import load_tree

    root = tmp_path_factory.mktemp("batch")
    configs: dict[str, dict] = {}
    samples = tiny_ranking["samples"]
    for example in SHIPPED:
        raw = yaml.safe_load((ROOT / "examples" / f"{example}.yaml").read_text())
        configs[example] = apply_overrides(raw, [f"data.train_input={samples}/train", f"data.eval_input={samples}/eval",
                                                 "train.max_steps=3", f"train.model_dir={root / example}"])
    init_tree(item_input_path=str(seqs / "items"), tree_output_dir=root / "tree", item_id_field="item_id",
              cate_id_field="category_id")
    levels = load_tree(root / "tree").num_levels
    configs["tdm"] = candidate_config(seqs, root / "tdm", "tdm", tree=str(root / "tree"),
                                      layer_num_sample=[0] + [1] * (levels - 1), windows=[1, 2, 2])
    configs["nann"] = candidate_config(seqs, root / "nann", "nann", negatives=5)
    for name in ("tdm", "nann"):
        configs[name]["train"]["max_steps"] = 6
        configs[name].setdefault("eval", {})["max_rows"] = 3
    write_toy_ctr(root / "ctr_train", rows=6000, seed=0)
    write_toy_ctr(root / "ctr_eval", rows=2000, seed=1, files=1)
    configs["deepfm"] = toy_config(root / "ctr_train", root / "deepfm", eval_input=root / "ctr_eval")
    configs["deepfm"]["train"]["epochs"] = 1
    configs["two_nodes_reference"] = _two_nodes_config(one_group, root / "two_nodes_reference")
    configs["resume_reference"] = _resume_config(one_group, root / "resume_reference")
    paths = []
    for name, cfg in configs.items():
        paths.append(root / f"{name}.yaml")
        paths[-1].write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(ROOT / "tests" / "dist_batch.py"), *map(str, paths)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "COLUMNS": "400"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.mark.parametrize("example", SHIPPED)
def test_shipped_ranking_examples_train_on_two_processes(batch, example):
    assert _weights(batch / example)["step"] == 3 and _evals(batch / example)[-1]["rows"] > 0


@pytest.mark.parametrize("model", ["tdm", "nann"])
def test_pair_scorers_train_on_two_processes_with_a_tiny_eval_set(batch, model):
    assert _evals(batch / model)[-1]["rows"] > 0


def test_eval_is_gathered_from_every_rank(batch):
    assert _evals(batch / "deepfm")[-1]["rows"] == 2000, "eval predictions gathered from both ranks"
    # 6000 rows, 2 ranks, 12 units: each rank gets ~3000 rows -> 12 steps of 256
    assert _weights(batch / "deepfm")["step"] == 12


def test_two_nodes_on_localhost_equal_two_processes_on_one(one_group, batch, tmp_path):
    (tmp_path / "two").mkdir()
    port = _free_port()
    nodes = [_train(_two_nodes_config(one_group, tmp_path / "two"), tmp_path / "two", "--nnodes", 2, "--node-rank", r,
                    "--master-addr", "127.0.0.1", "--master-port", port, wait=False) for r in (0, 1)]
    outs = [n.communicate(timeout=300) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], [o[1][-2000:] for o in outs]
    assert outs[0][0].strip() == str(tmp_path / "two" / "model") and outs[1][0].strip() == ""
    one, two = _weights(batch / "two_nodes_reference" / "model"), _weights(tmp_path / "two" / "model")
    assert one["step"] == two["step"]
    for k, v in one["model"].items():
        assert torch.allclose(v.float(), two["model"][k].float(), atol=1e-6), k


def test_resume_after_a_killed_two_process_run_equals_an_uninterrupted_one(one_group, batch, tmp_path):
    (tmp_path / "killed").mkdir()
    # rank 1 dies at step 7; rank 0 had checkpointed step 4
    start = time.monotonic()
    proc = _train(_resume_config(one_group, tmp_path / "killed"), tmp_path / "killed", "--nproc", 2,
                  env={"RECTOOL_FAULT": "train.step:7", "RECTOOL_FAULT_RANK": "1"})
    assert proc.returncode != 0 and time.monotonic() - start < 60
    lines = proc.stderr.strip().splitlines()
    logs = tmp_path / "killed" / "model" / "logs"
    assert lines[-1] == f"error: distributed training stopped, rank 1 failed: killed by SIGKILL (every rank's " \
                        f"output: {logs})", proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and (logs / "launcher.log").is_file()
    proc = _train(_resume_config(one_group, tmp_path / "killed"), tmp_path / "killed", "--nproc", 2)
    assert proc.returncode == 0 and "resuming from" in proc.stderr, proc.stderr[-3000:]
    whole, resumed = _weights(batch / "resume_reference" / "model"), _weights(tmp_path / "killed" / "model")
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


# ----------------------------------------------------------------------------- sharded inference


@pytest.fixture(scope="module")
def exports(seqs, tmp_path_factory):
    """A two-tower and a DeepFM export, an item table, a user table and a CTR table of several row groups."""
    import pyarrow as pa

    from helpers import retrieval_config
    from rectool.train.config import Config
    from rectool.train.export import export
    from rectool.train.trainer import train

    root = tmp_path_factory.mktemp("exports")
    tower = retrieval_config(seqs, root / "tt")
    tower["train"]["max_steps"] = 10
    train(Config.model_validate(tower), device="cpu")
    write_toy_ctr(root / "ctr", rows=2000, seed=3, files=1, row_group=300)
    ctr = toy_config(root / "ctr", root / "fm")
    ctr["train"]["max_steps"] = 5
    train(Config.model_validate(ctr), device="cpu")
    for name in ("tt", "fm"):
        export(root / name, root / f"{name}_ex")
    (root / "items").mkdir()
    pq.write_table(pq.read_table(seqs / "items"), root / "items" / "part-0.parquet", row_group_size=64)
    (root / "users").mkdir()
    users = pq.read_table(seqs / "train").slice(0, 500)
    pq.write_table(users.append_column("row", pa.array(range(users.num_rows))), root / "users" / "part-0.parquet",
                   row_group_size=90)
    return root


def _rectool(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rectool", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "400"})


def test_sharded_predict_embed_retrieve_equal_one_process(exports, tmp_path, cli):
    from rectool.artifacts import read_meta, read_table

    def run(*args):  # --nproc 1 in this process (no launcher: the same code path, without a start-up)
        if args[args.index("--nproc") + 1] == 1:
            res = cli(*map(str, args), expect=0)
            return subprocess.CompletedProcess(args, 0, res.stdout, res.stderr)
        return _rectool(*args)

    r = exports
    runs = {
        "predict": ["predict", "--model", r / "fm_ex", "--input", r / "ctr", "--reserved-columns", "user_id,item_id"],
        "embed": ["embed", "--model", r / "tt_ex", "--items", r / "items", "--reserved-columns", "category_id"],
    }
    for name, args in runs.items():
        outs = []
        for n in (1, 2):
            proc = run(*args, "-o", tmp_path / f"{name}{n}", "--nproc", n, "--device", "cpu")
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert proc.stdout.strip() == str(tmp_path / f"{name}{n}")
            outs.append(read_table(tmp_path / f"{name}{n}"))
        assert outs[0].equals(outs[1]), f"{name}: the same rows in the same order"
        assert read_meta(tmp_path / f"{name}2")["processes"] == 2
        assert read_meta(tmp_path / f"{name}2")["rows"] == outs[0].num_rows
        assert len(list((tmp_path / f"{name}2").glob("part-00001-*.parquet"))) >= 1, "rank 1 wrote its share"
    recalls = []
    for n in (1, 2):
        proc = run("retrieve", "--method", "brute", "--model", r / "tt_ex", "--items", tmp_path / "embed1",
                        "--users", r / "users", "--reserved-columns", "row", "--topk", 20, "-o", tmp_path / f"rec{n}",
                        "--nproc", n, "--device", "cpu")
        assert proc.returncode == 0, proc.stderr[-3000:]
        recalls.append(read_table(tmp_path / f"rec{n}"))
    assert recalls[0].equals(recalls[1])
    meta = read_meta(tmp_path / "rec2")
    assert meta["rows"] == 500 and meta["processes"] == 2 and meta["scored"] == 500 * 300


def test_sharded_job_failure_is_one_line_and_writes_nothing(exports, tmp_path):
    proc = _rectool("embed", "--model", exports / "fm_ex", "--items", exports / "items", "-o", tmp_path / "e",
                    "--nproc", 2)
    assert proc.returncode == 2 and not (tmp_path / "e").exists()
    assert len(proc.stderr.strip().splitlines()) == 1 and "has no item program" in proc.stderr
    existing = tmp_path / "kept"
    existing.mkdir()
    proc = _rectool("embed", "--model", exports / "tt_ex", "--items", exports / "items", "-o", existing,
                    "--nproc", 2)
    assert proc.returncode == 2 and "already exists" in proc.stderr and list(existing.iterdir()) == []


def test_torch_brute_search_equals_the_kernel():
    """The CUDA path of retrieve --method brute (matrix products + torch.topk), run here on the CPU."""
    import numpy as np

    from rectool.retrieval.brute import brute_search_dot, brute_search_dot_torch
    from rectool.retrieval.formats import Ragged

    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(400, 8)).astype(np.float32)
    ids = np.arange(400, dtype=np.int64) * 7 + 1
    exclude = Ragged.from_lists([list(ids[rng.choice(400, 5, replace=False)]) for _ in range(50)])
    ref = brute_search_dot(users, items, 30, item_ids=ids, exclude=exclude, progress=False)
    got = brute_search_dot_torch(users, torch.from_numpy(items), 30, item_ids=ids, exclude=exclude, user_batch=16)
    assert np.array_equal(ref.item_ids, got.item_ids) and np.array_equal(ref.lengths, got.lengths)
    assert np.allclose(ref.scores, got.scores, atol=1e-5)
    few = brute_search_dot_torch(users[:2], torch.from_numpy(items[:6]), 6, item_ids=ids[:6],
                                 exclude=Ragged.from_lists([[ids[0], ids[1]], []]))
    assert list(few.lengths) == [4, 6] and (few.item_ids[0, 4:] == -1).all()


def test_a_program_on_another_device_takes_cpu_inputs_and_gives_cpu_outputs():
    from rectool.programs.device import OnDevice, program_on, resolve_device

    class Double(torch.nn.Module):
        def forward(self, x):
            return x["a"] * 2

    assert program_on(Double(), torch.device("cpu")).__class__ is Double
    wrapped = OnDevice(Double(), torch.device("meta"))  # any non-CPU device: inputs are moved to it
    with pytest.raises(NotImplementedError):  # meta tensors have no data to bring back: the move was made
        wrapped({"a": torch.ones(2)})
    assert resolve_device("cpu", 0).type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto", 0).type == "cpu"
