"""Crash tests: kill -9 at named points (``RECTOOL_FAULT``), concurrent writers, --overwrite interrupted.

Every kill is deterministic: the process SIGKILLs itself when it reaches the fault point
(``rectool.faults``), so nothing here waits on a timer. After each crash the same command
is run again and must give what an uninterrupted run gives; no temp is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from helpers import ROOT, toy_config, write_toy_ctr
from rectool import artifacts
from rectool.errors import UserError
from rectool.train import checkpoint as ckpt

KILLED = -signal.SIGKILL


def _run(*args, fault: str | None = None, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    full = {**os.environ, "COLUMNS": "400", **(env or {})}  # no wrapped log lines
    full.pop("RECTOOL_FAULT", None)
    if fault:
        full["RECTOOL_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "rectool", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=full, timeout=300, **kw)


def _said(stderr: str, text: str) -> bool:
    """``text`` is in ``stderr``, however the console wrapped its lines."""
    return text.replace(" ", "") in stderr.replace("\n", "").replace(" ", "")


def _leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.glob(f".{path.name}.*"))


def _table(path: Path):
    return pq.read_table(path).sort_by([(c, "ascending") for c in ("user_id", "item_id", "time")
                                        if c in pq.read_schema(next(path.rglob("*.parquet"))).names])


# ----------------------------------------------------------------------------- train


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash_toy")
    write_toy_ctr(root / "train", rows=3000, seed=0)
    write_toy_ctr(root / "eval", rows=500, seed=1, files=1)
    return root


def _config(toy: Path, where: Path, **train) -> Path:
    cfg = toy_config(toy / "train", where / "model", eval_input=toy / "eval")
    cfg["train"].update({"epochs": 2, "threads": 1, "log_every": 5, **train})
    cfg["model"]["deep"]["dropout"] = 0.1  # RNG in every step: resume must restore it
    path = where / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _records(model_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (model_dir / "metrics.jsonl").read_text().splitlines()]


def _final_weights(model_dir: Path) -> dict:
    return ckpt.load(ckpt.list_checkpoints(model_dir)[-1])


@pytest.fixture(scope="module")
def uninterrupted(toy, tmp_path_factory, cli_module):
    """The reference run, in this process: only the runs that are killed need a process of their own."""
    where = tmp_path_factory.mktemp("whole")
    res = cli_module("train", "-c", _config(toy, where, checkpoint_every=10), "--device", "cpu")
    assert _said(res.stderr, "starting fresh: no checkpoint in")
    return where / "model"


@pytest.mark.parametrize("fault", ["train.step:17", "checkpoint.before_rename:2"])
def test_killed_training_resumes_to_the_uninterrupted_result(toy, tmp_path, uninterrupted, fault, cli):
    cfg = _config(toy, tmp_path, checkpoint_every=10)
    assert _run("train", "-c", cfg, "--device", "cpu", fault=fault).returncode == KILLED
    model_dir = tmp_path / "model"
    if fault.startswith("checkpoint"):  # killed mid-save: the half-written file is there...
        assert list((model_dir / "checkpoints").glob(".ckpt-*.pt.tmp-*"))
    proc = cli("train", "-c", cfg, "--device", "cpu")  # the rerun: in this process
    assert _said(proc.stderr, "resuming from") and _said(proc.stderr, "ckpt-00000010.pt")
    assert not list((model_dir / "checkpoints").glob(".*tmp*")), "...and the rerun swept it"
    whole, resumed = _final_weights(uninterrupted), _final_weights(model_dir)
    assert resumed["step"] == whole["step"]
    for k, v in whole["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    records = _records(model_dir)
    keys = [(r["kind"], r["step"]) for r in records]
    assert len(keys) == len(set(keys)), "no step logged twice after the resume"
    assert [r["loss"] for r in records if r["kind"] == "train"] == \
        [r["loss"] for r in _records(uninterrupted) if r["kind"] == "train"]


def test_rerun_of_a_finished_training_logs_nothing_twice(toy, tmp_path, cli):
    cfg = _config(toy, tmp_path, epochs=1)
    cli("train", "-c", cfg, "--device", "cpu")
    before = (tmp_path / "model" / "metrics.jsonl").read_text()
    proc = cli("train", "-c", cfg, "--device", "cpu")
    assert _said(proc.stderr, "resuming from")
    assert (tmp_path / "model" / "metrics.jsonl").read_text() == before


def test_checkpoints_by_wall_clock_by_default(toy, tmp_path, monkeypatch):
    """No checkpoint_every: a checkpoint still lands every checkpoint_minutes (default 5) of training."""
    import rectool.train.trainer as trainer_mod
    from rectool.train.config import Config

    raw = toy_config(toy / "train", tmp_path / "model")
    raw["train"].update({"epochs": 2, "threads": 1, "log_every": 2})
    cfg = Config.model_validate(raw)
    assert cfg.train.checkpoint_every is None and cfg.train.checkpoint_minutes == 5.0
    ticks = iter(range(0, 10_000, 100))  # each reading of the clock: 100 s later
    monkeypatch.setattr(trainer_mod, "_clock", lambda: next(ticks))
    saved = []
    real = trainer_mod.ckpt.save
    monkeypatch.setattr(trainer_mod.ckpt, "save", lambda path, payload: (saved.append(payload["step"]),
                                                                         real(path, payload)))
    trainer_mod.train(cfg, device="cpu")
    # a log step every 2 steps reads the clock once: 300 s pass between two saves; 24 steps end with one
    assert saved == [6, 12, 18, 24]


def test_second_training_in_the_same_model_dir_fails_at_once(toy, tmp_path, cli):
    cfg = _config(toy, tmp_path, epochs=1)
    first = subprocess.Popen([sys.executable, "-m", "rectool", "train", "-c", str(cfg), "--device", "cpu"],
                             cwd=ROOT, env={**os.environ, "RECTOOL_FAULT": "train.step:3:stop"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_stopped(first)
        proc = cli("train", "-c", cfg, "--device", "cpu", expect=2)
        assert _said(proc.stderr, "another rectool process") and _said(proc.stderr, str(tmp_path / "model"))
    finally:
        first.send_signal(signal.SIGCONT)
        first.communicate(timeout=300)
    assert first.returncode == 0


# ----------------------------------------------------------------------------- outputs


def _wait_stopped(proc: subprocess.Popen, limit: float = 120) -> None:
    """Until the process has stopped itself at its fault point (state T in /proc)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        time.sleep(0.05)
    raise AssertionError("the writer never reached its fault point")


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """Two UserBehavior logs of different sizes (two different outputs of convert)."""
    root = tmp_path_factory.mktemp("logs")
    big = _run("synth", "--dataset", "userbehavior", "--users", "300", "--items", "2000", "-o", root / "big")
    small = _run("synth", "--dataset", "userbehavior", "--users", "40", "--items", "300", "--categories", "30",
                 "-o", root / "small")
    assert big.returncode == 0 and small.returncode == 0, big.stderr + small.stderr
    return Path(big.stdout.strip()) / "UserBehavior.csv", Path(small.stdout.strip()) / "UserBehavior.csv"


def _convert(src: Path, out: Path, *flags: str, fault: str | None = None, env: dict | None = None):
    return _run("convert", "--format", "userbehavior", src, "-o", out, *flags, fault=fault, env=env)


def test_concurrent_writers_one_wins_one_fails_cleanly(logs, tmp_path):
    big, small = logs
    out = tmp_path / "events"
    first = subprocess.Popen([sys.executable, "-m", "rectool", "convert", "--format", "userbehavior", str(big),
                              "-o", str(out)], cwd=ROOT, env={**os.environ, "RECTOOL_FAULT":
                                                             "artifacts.before_commit:1:stop"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_stopped(first)  # the first writer has done all its work and is about to commit
        for flags in ((), ("--overwrite",)):
            second = _convert(small, out, *flags)
            assert second.returncode == 2, second.stderr
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and "another rectool process" in lines[0] and str(out) in lines[0]
            assert not out.exists()
    finally:
        first.send_signal(signal.SIGCONT)
        first.communicate(timeout=300)
    assert first.returncode == 0
    expected = tmp_path / "expected"
    assert _convert(big, expected).returncode == 0
    assert _table(out).equals(_table(expected)), "the output is the first writer's, whole"
    assert _leftovers(out) == []


def test_output_that_appears_during_the_work_is_never_replaced(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(UserError, match="another process created it while this run was writing"), \
            artifacts.atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("mine")
        final.mkdir()  # someone else's output, made while we worked (not through rectool)
        (final / "theirs.txt").write_text("theirs")
    assert sorted(p.name for p in final.iterdir()) == ["theirs.txt"]
    assert _leftovers(final) == []


@pytest.mark.parametrize("exchange", [True, False])
def test_overwrite_is_never_without_a_complete_output(logs, tmp_path, monkeypatch, exchange):
    """Killed inside --overwrite's commit: the old or the new output is whole, and the rerun keeps it."""
    big, small = logs
    out = tmp_path / "events"
    assert _convert(small, out).returncode == 0
    old = _table(out)
    expected = tmp_path / "expected"
    assert _convert(big, expected).returncode == 0
    new = _table(expected)
    if exchange:  # one renameat2(RENAME_EXCHANGE): killed after it, the new output is in place
        assert _convert(big, out, "--overwrite", fault="artifacts.after_exchange").returncode == KILLED
        assert _table(out).equals(new)
    else:  # a filesystem without exchange: two renames; killed between them, the old output is the backup
        script = ("import sys, rectool.commit as c; c._RENAMEAT2 = None; from rectool.cli import main; "
                  "sys.argv = ['rectool'] + sys.argv[1:]; main()")
        proc = subprocess.run([sys.executable, "-c", script, "convert", "--format", "userbehavior", str(big), "-o",
                               str(out), "--overwrite"], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "RECTOOL_FAULT": "artifacts.mid_overwrite"}, timeout=300)
        assert proc.returncode == KILLED, proc.stderr
        assert not out.exists() and any(".old-" in n for n in _leftovers(out))
        # the next writer restores the only complete copy before anything else
        again = _convert(small, out)
        assert again.returncode == 2 and "already exists" in again.stderr
        assert _table(out).equals(old)
    assert _convert(big, out, "--overwrite").returncode == 0
    assert _table(out).equals(new) and _leftovers(out) == []


def test_killed_convert_leaves_nothing_and_the_rerun_matches(logs, tmp_path):
    big, _ = logs
    out = tmp_path / "events"
    assert _convert(big, out, fault="artifacts.before_commit").returncode == KILLED
    assert not out.exists() and _leftovers(out)  # a complete temp, not committed
    assert _convert(big, out).returncode == 0
    assert _leftovers(out) == []
    expected = tmp_path / "expected"
    assert _convert(big, expected).returncode == 0
    assert _table(out).equals(_table(expected))


def test_convert_killed_mid_stream_then_rerun_matches(tiny_tianchi, tmp_path):
    src = tiny_tianchi / "offline" / "tianchi_fresh_comp_train_user.csv"
    out = tmp_path / "events"
    args = ("convert", "--format", "tianchi-user", src, "-o", out)
    assert _run(*args, fault="convert.batch").returncode == KILLED  # after its first batch was written
    assert not out.exists()
    assert _run(*args).returncode == 0 and _leftovers(out) == []
    assert _run("convert", "--format", "tianchi-user", src, "-o", tmp_path / "expected").returncode == 0
    assert _table(out).equals(_table(tmp_path / "expected"))


def test_features_killed_between_cutoffs_then_rerun_matches(tiny_ranking, tmp_path):
    def features(out: Path, fault: str | None = None):
        return _run("features", "--events", tiny_ranking["events"], "--items", tiny_ranking["items"],
                    "--cutoffs", "2014-12-17,2014-12-18", "--temp-dir", tmp_path / "spill", "-o", out, fault=fault)

    out = tmp_path / "features"
    assert features(out, fault="features.cutoff:1").returncode == KILLED
    assert not out.exists() and list((tmp_path / "spill").glob("rectool-duckdb-*")), "a spill folder was left"
    assert features(out).returncode == 0
    assert _leftovers(out) == [] and list((tmp_path / "spill").glob("rectool-duckdb-*")) == [], "...and swept"
    assert features(tmp_path / "expected").returncode == 0
    for group in ("user", "item", "category", "user_item"):
        for cut in ("2014-12-17", "2014-12-18"):
            part = f"{group}/cutoff={cut}/part-00000.parquet"
            got, want = pq.read_table(out / part), pq.read_table(tmp_path / "expected" / part)
            keys = [(c, "ascending") for c in got.column_names if c.endswith("_id")]
            assert got.sort_by(keys).equals(want.sort_by(keys)), part
