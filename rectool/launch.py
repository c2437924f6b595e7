"""Launching a rectool command on several processes and machines, and failing in one line.

    rectool train -c x.yaml --nproc 2                                          # one machine
    rectool train -c x.yaml --nproc 4 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --master-port 29500
    rectool train -c x.yaml --nproc 4 --nnodes 2 --node-rank 1 --master-addr 10.0.0.1 --master-port 29500
    rectool train -c x.yaml --nproc 4 --nnodes 2 --rdzv-endpoint 10.0.0.1:29400   # c10d rendezvous instead

``launch`` runs ``torch.distributed.run`` in this process (the same launcher as ``torchrun``;
a user's own ``torchrun ... -m rectool train`` works the same, without the logging below).
``train`` and the sharded inference commands (``predict``, ``embed``, ``retrieve`` with
``--nproc``, see ``rectool.sharding``) launch through it. Each worker's output goes to a
logs folder (``model_dir/logs/`` for ``train``): rank 0 keeps the console for its progress
and summary, the other ranks write ``rank-R.log``, and a failing rank writes its traceback
there and a one-line ``rank-R.error`` (``worker_guard``). When the job fails the launcher's
own messages are in ``launcher.log`` there and the console shows one line naming the rank
at fault and its error; ``after_failure`` cleans up (``train``: a checkpoint half-written by
a killed rank 0).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rectool.badinput import first_line
from rectool.errors import EXIT_USER_ERROR, UserError

LOGS_ENV = "RECTOOL_WORKER_LOGS"  # set by ``launch``: the folder every worker logs into


class PeerFailed(Exception):
    """Another process of the job failed: this one stops without a report of its own (that one's is the cause)."""


@dataclass(frozen=True)
class LaunchOptions:
    """Where the processes run; checked here so that a wrong combination is one line, before any start."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None
    rdzv_endpoint: str | None = None

    def __post_init__(self) -> None:
        if self.nproc < 1:
            raise UserError("--nproc must be at least 1")
        if self.nnodes < 1:
            raise UserError("--nnodes must be at least 1")
        if self.master_port is not None and not 0 < self.master_port < 65536:
            raise UserError(f"--master-port {self.master_port}: choose a port between 1 and 65535")
        if self.rdzv_endpoint is not None:
            if self.master_addr is not None or self.node_rank is not None:
                raise UserError("--rdzv-endpoint replaces --master-addr/--node-rank (ranks are assigned at the "
                                "rendezvous): give one or the other")
            if ":" not in self.rdzv_endpoint:
                raise UserError(f"--rdzv-endpoint {self.rdzv_endpoint}: give HOST:PORT")
            return
        if self.nnodes > 1:
            missing = [flag for flag, value in (("--node-rank", self.node_rank), ("--master-addr", self.master_addr))
                       if value is None]
            if missing:
                raise UserError(f"--nnodes {self.nnodes}: also give {' and '.join(missing)} (the same --master-addr "
                                "and --master-port on every machine, --node-rank 0..nnodes-1), or --rdzv-endpoint")
        if self.node_rank is not None and not 0 <= self.node_rank < self.nnodes:
            raise UserError(f"--node-rank {self.node_rank}: must be in 0..{self.nnodes - 1} for --nnodes {self.nnodes}")
        if self.master_port is not None and self.master_addr is None:
            raise UserError("--master-port without --master-addr: give both (or neither on one machine)")

    @property
    def distributed(self) -> bool:
        return self.nproc > 1 or self.nnodes > 1

    def torchrun_args(self) -> list[str]:
        args = [f"--nproc-per-node={self.nproc}", f"--nnodes={self.nnodes}"]
        if self.rdzv_endpoint is not None:
            return args + ["--rdzv-backend=c10d", f"--rdzv-endpoint={self.rdzv_endpoint}", "--rdzv-id=rectool"]
        if self.master_addr is None:
            return args + ["--standalone"]
        return args + [f"--node-rank={self.node_rank or 0}", f"--master-addr={self.master_addr}",
                       f"--master-port={self.master_port or 29500}"]


def launch(options: LaunchOptions, worker_args: list[str], logs: Path, what: str = "training",
           after_failure: Callable[[], object] | None = None) -> int:
    """Run ``python -m rectool <worker_args>`` on every process of this node; the exit code of the job."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("rank-*.error"):  # a previous attempt's
        old.unlink(missing_ok=True)
    os.environ[LOGS_ENV] = str(logs)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torch.set_num_threads sets each worker's share
    args = get_args_parser().parse_args(options.torchrun_args() + ["--monitor-interval=0.5", "-m", "rectool",
                                                                   *worker_args])
    with _launcher_log(logs / "launcher.log"):
        try:
            run(args)
            return 0
        except ChildFailedError as exc:
            rank, message, code = _root_cause(exc, logs)
        except Exception as exc:  # noqa: BLE001 (rendezvous timeouts, port in use: the launcher's own errors)
            rank, message, code = None, f"{type(exc).__name__}: {first_line(exc)}", 1
    if after_failure is not None:  # every worker of this node is gone
        after_failure()
    who = f"rank {rank} failed: " if rank is not None else "the launcher failed: "
    sys.stderr.write(f"error: distributed {what} stopped, {who}{message} (every rank's output: {logs})\n")
    return code


@contextlib.contextmanager
def _launcher_log(path: Path) -> Iterator[None]:
    """The elastic agent's log lines (start-up, SIGTERM to the survivors, failure tables) into a file."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger(n) for n in ("torch.distributed", "torch.distributed.elastic")]
    saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        lg.handlers, lg.propagate = [handler], False
        lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, (handlers, propagate, level) in zip(loggers, saved):
            lg.handlers, lg.propagate = handlers, propagate
            lg.setLevel(level)
        handler.close()


def _root_cause(exc, logs: Path) -> tuple[int, str, int]:  # noqa: ANN001 (ChildFailedError)
    """The rank to blame: one that reported a user error, else one killed by a signal, else the first to fail
    (a rank that dies takes the others' collectives down with it, and they fail a moment later)."""
    reports = {}
    for rank in exc.failures:
        report = logs / f"rank-{rank}.error"
        if report.is_file():
            with contextlib.suppress(ValueError):
                reports[rank] = json.loads(report.read_text())

    def blame(rank: int) -> tuple[int, float]:
        failure = exc.failures[rank]
        if reports.get(rank, {}).get("user_error"):
            return 0, failure.timestamp
        if failure.exitcode < 0:
            return 1, failure.timestamp
        return (2 if rank in reports else 3), failure.timestamp

    rank = min(exc.failures, key=blame)
    failure = exc.failures[rank]
    if rank in reports:
        code = EXIT_USER_ERROR if reports[rank].get("user_error") else 1
        return rank, reports[rank]["message"], code
    if failure.exitcode < 0:
        return rank, f"killed by {failure.signal_name()}", 1
    return rank, f"exit code {failure.exitcode}", 1


@contextlib.contextmanager
def worker_guard() -> Iterator[None]:
    """In a worker started by ``launch``: other ranks log to ``rank-R.log``; any rank's failure becomes
    ``rank-R.error`` (one line) + its traceback in ``rank-R.log``, and the launcher reports it.
    Elsewhere (one process, a user's own torchrun) it does nothing."""
    logs = os.environ.get(LOGS_ENV)
    if not logs or "RANK" not in os.environ:
        yield
        return
    rank = int(os.environ["RANK"])
    log_path = Path(logs) / f"rank-{rank}.log"
    if rank != 0:  # rank 0 keeps the console: progress, summary, the model dir on stdout
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        if isinstance(exc, PeerFailed):
            os._exit(1)
        user = isinstance(exc, UserError)
        message = str(exc) if user else f"{type(exc).__name__}: {first_line(exc)}"
        with open(log_path, "a") as log:
            traceback.print_exc(file=log)
        (Path(logs) / f"rank-{rank}.error").write_text(json.dumps({"message": message, "user_error": user}))
        os._exit(EXIT_USER_ERROR if user else 1)  # the launcher prints the one line
