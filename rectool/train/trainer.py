"""``rectool train``: the training loop, readable top to bottom.

    rectool train --config examples/deepfm_tianchi.yaml                 # one process
    rectool train --config x.yaml --nproc 2                             # 2 processes (gloo on CPU)
    torchrun --nproc-per-node 2 -m rectool train --config x.yaml        # the same, your launcher

Inputs: the config's ``data.train_input`` (and ``eval_input``), parquet.
Outputs in ``train.model_dir``: ``config.yaml``, ``input_spec.json``, ``checkpoints/``,
``metrics.jsonl``, ``tensorboard/`` (layout: ``rectool.train.checkpoint``).

Each step: batch -> model -> loss (BCE, or softmax CE) -> backward (gradient
accumulation over ``grad_accum_steps`` batches) -> clip -> dense + sparse optimiser
step -> lr schedule. Every ``log_every`` steps the mean loss (all-reduced) is logged;
every ``eval_every`` steps and at the end the eval set is scored on all ranks and the
predictions gathered for AUC / GAUC / logloss. Rank 0 alone logs and checkpoints.
Rerunning the same command resumes from the latest checkpoint, at the same data
position and RNG state, and ends where an uninterrupted run ends. A fresh run (no checkpoint
of its own) with ``train.init_checkpoint`` starts from another run's weights
(``rectool.train.warmstart``); its own checkpoint, once there is one, takes precedence.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from rectool import console
from rectool.artifacts import output_lock
from rectool.errors import UserError
from rectool.faults import fault_point
from rectool.programs.inputs import InputSpec
from rectool.train import checkpoint as ckpt
from rectool.train import distributed as D
from rectool.train.config import Config, dump_config
from rectool.train.data import Loader, list_files
from rectool.train.models import MODELS, build_model
from rectool.train.models.base import Model
from rectool.train.optim import build_optimizers, build_schedulers
from rectool.train.schema import build_input_spec, normalizer_stats
from rectool.train.warmstart import warm_start


class _Log:
    """metrics.jsonl + TensorBoard on rank 0; nothing elsewhere.

    They continue the checkpoint the run starts from: records after its step (written by a run
    killed later) are dropped, so a resumed run never logs a step twice; a fresh start drops them all.
    """

    def __init__(self, model_dir: Path, enabled: bool, start_step: int | None) -> None:
        self.enabled = enabled
        self.tb = None
        self.records: list[dict[str, Any]] = []
        if enabled:
            path = model_dir / "metrics.jsonl"
            self.records = _records_up_to(path, start_step)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))
            os.replace(tmp, path)
            self.jsonl = open(path, "a")  # noqa: SIM115 (closed in close())
            if start_step is None:
                shutil.rmtree(model_dir / "tensorboard", ignore_errors=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step: TensorBoard hides the events a killed run logged after the checkpoint
                self.tb = SummaryWriter(str(model_dir / "tensorboard"),
                                        purge_step=None if start_step is None else start_step + 1)
            except ImportError:  # tensorboard is a dependency, but logging must never stop training
                self.tb = None

    def last(self, kind: str, step: int) -> dict[str, float] | None:
        """The record of ``kind`` at ``step`` already logged (a finished run rerun), or None."""
        found = [r for r in self.records if r.get("kind") == kind and r.get("step") == step]
        return {k: v for k, v in found[-1].items() if k not in ("kind", "step", "time")} if found else None

    def write(self, kind: str, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"kind": kind, "step": step, "time": round(time.time(), 3), **values}) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()


def _records_up_to(path: Path, step: int | None) -> list[dict[str, Any]]:
    """metrics.jsonl's records up to ``step`` (none for a fresh start); a line cut by a kill is dropped."""
    if step is None or not path.is_file():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(record)
    return kept


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _cores_per_process() -> int:
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    return max(1, (os.cpu_count() or 1) // local_world)


def _threads(cfg: Config) -> int:
    return cfg.train.threads or _cores_per_process()


_clock = time.monotonic  # the checkpoint cadence's clock (a test sets it)

LOADER_WORKERS_FILE = "loader_workers.txt"


def _loader_workers(cfg: Config, model_dir: Path) -> int:
    """``data.num_workers``, with ``auto`` resolved once per model_dir: the batch order depends on
    the worker count, so a run resumed on a machine with other cores keeps the first run's count."""
    if cfg.data.num_workers != "auto":
        return cfg.data.num_workers
    saved = model_dir / LOADER_WORKERS_FILE
    if saved.is_file() and saved.read_text().strip().isdigit():
        return int(saved.read_text())
    cores = _cores_per_process()
    return 0 if cores <= 2 else 1 if cores < 8 else 2


@torch.no_grad()
def evaluate(model: Model, loader: Loader, cfg: Config, dist: D.Dist) -> dict[str, float]:
    """Run the eval set on every rank, gather the model's per-row arrays, compute its metrics."""
    module = model.module if isinstance(model, DistributedDataParallel) else model
    module.eval()
    parts: dict[str, list[np.ndarray]] = {}
    for batch in loader.batches(0):
        batch = _to(batch, dist.device)
        for k, v in module.eval_step(module(batch), batch).items():
            parts.setdefault(k, []).append(v)
    module.train()
    # every rank takes part in the gather, also one that holds no eval rows (an empty dict)
    arrays = D.gather_arrays({k: np.concatenate(v) for k, v in parts.items()})
    rows = next(iter(arrays.values())).shape[0] if arrays else 0
    return module.eval_metrics(arrays, cfg) | {"rows": int(rows)}


def _same_config(saved: str, cfg: Config) -> bool:
    """Whether a model_dir's config.yaml is ``cfg``: compared validated, so a key rectool added since
    (written out with its default now, absent from an older config.yaml) does not stop a resume, nor
    does ``train.init_checkpoint`` (a resume does not read it)."""
    if saved == dump_config(cfg):
        return True
    try:
        old = Config.model_validate(yaml.safe_load(saved))
    except Exception:  # noqa: BLE001 (a config.yaml this version cannot read is another config)
        return False
    init = {"init_checkpoint": cfg.train.init_checkpoint}
    return old.model_copy(update={"train": old.train.model_copy(update=init)}) == cfg


def _prepare_model_dir(cfg: Config, spec: InputSpec, dist: D.Dist, resume: bool) -> Path:
    model_dir = Path(cfg.train.model_dir)
    existing = ckpt.list_checkpoints(model_dir)
    if dist.is_main:
        model_dir.mkdir(parents=True, exist_ok=True)
        for stale in ckpt.sweep_temps(model_dir):
            console.log(f"removed {stale.name}, a checkpoint a killed run left half-written")
        saved = model_dir / "config.yaml"
        if existing and not resume:
            raise UserError(f"train.model_dir {model_dir}: already holds checkpoints; resume (drop --no-resume) "
                            "or choose a new model_dir")
        if existing and saved.is_file() and not _same_config(saved.read_text(), cfg):
            old, new = saved.read_text().splitlines(), dump_config(cfg).splitlines()
            diff = next((f"'{a.strip()}' -> '{b.strip()}'" for a, b in zip(old, new) if a != b), "length differs")
            raise UserError(f"train.model_dir {model_dir}: its checkpoints come from another config ({diff}); "
                            "use a new model_dir to train this one")
        saved.write_text(dump_config(cfg))
        (model_dir / "input_spec.json").write_text(spec.to_json())
        workers = model_dir / LOADER_WORKERS_FILE
        if not (existing and workers.is_file()):
            workers.write_text(str(_loader_workers(cfg, model_dir)))
    D.barrier()
    return model_dir


def train(cfg: Config, device: str = "auto", resume: bool = True) -> dict[str, Any]:
    """Train the configured model; returns the summary figures."""
    dist = D.setup(device)
    try:
        with contextlib.ExitStack() as held:
            if dist.is_main:  # one training per model_dir: a second one fails at once, in one line
                model_dir = Path(cfg.train.model_dir)
                try:
                    model_dir.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise UserError(f"train.model_dir {model_dir}: cannot create it ({exc.strerror}); "
                                    "choose a writable place") from exc
                held.enter_context(output_lock(model_dir))
            fresh = dist.is_main and not Path(cfg.train.model_dir).exists()
            try:
                return _train(cfg, dist, resume)
            except BaseException:
                # a run that made model_dir and failed before its first checkpoint leaves nothing half-done
                if fresh and not ckpt.list_checkpoints(Path(cfg.train.model_dir)):
                    shutil.rmtree(cfg.train.model_dir, ignore_errors=True)
                raise
    finally:
        D.teardown()


def _train(cfg: Config, dist: D.Dist, resume: bool) -> dict[str, Any]:
    torch.set_num_threads(_threads(cfg))
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    files = list_files(cfg.data.train_input, "data.train_input")
    from rectool.tablefile import read_schema

    spec = build_input_spec(cfg, read_schema(files[0]), cfg.data.train_input, files)
    stats = normalizer_stats(cfg, files, spec)
    extras = MODELS[cfg.model.type].gather_extras(cfg, files)
    sparse_grads = cfg.optimizer.sparse.type != "dense"
    model = build_model(cfg, spec, stats, sparse=sparse_grads, extras=extras).to(dist.device)
    module = model
    if dist.enabled:
        if sparse_grads:  # DDP's reducer cannot bucket sparse gradients: the tables' rows are all-reduced by hand
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                model, [f"engine.tables.{k}" for k in module.engine.tables])
        # find_unused_parameters: a config may leave layers out of a step (W&D without dense wide inputs,
        # a group a model never reads); DDP would otherwise stop with "parameters that were not used"
        model = DistributedDataParallel(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
                                        find_unused_parameters=True)
    keys = (cfg.eval.gauc_key,) if "gauc" in cfg.eval.metrics and cfg.model.needs_label else ()
    d = cfg.data
    # the loaders read every input's footer: a bad file stops here, before model_dir is written to
    workers = _loader_workers(cfg, Path(cfg.train.model_dir))
    train_loader = Loader(d.train_input, spec, batch_size=d.batch_size, num_workers=workers,
                          seed=cfg.train.seed, shuffle=d.shuffle, shuffle_buffer=d.shuffle_buffer,
                          drop_remainder=d.drop_remainder, rank=dist.rank, world=dist.world)
    eval_loader = None
    if d.eval_input:
        eval_loader = Loader(d.eval_input, spec, batch_size=d.eval_batch_size or d.batch_size,
                             num_workers=min(workers, 1), seed=cfg.train.seed, shuffle=False, shuffle_buffer=0,
                             drop_remainder=False, rank=dist.rank, world=dist.world, keys=keys,
                             what="data.eval_input", max_rows=cfg.eval.max_rows)
    # warm start: only for a fresh run (its own checkpoints win); a bad path stops here, in one line
    init = None
    if cfg.train.init_checkpoint and not (resume and ckpt.list_checkpoints(Path(cfg.train.model_dir))):
        init = ckpt.resolve_init(cfg.train.init_checkpoint)
    model_dir = _prepare_model_dir(cfg, spec, dist, resume)
    steps_per_epoch = [train_loader.steps_per_epoch(e) for e in range(cfg.train.epochs)]
    total_steps = sum(steps_per_epoch)
    if cfg.train.max_steps is not None:
        total_steps = min(total_steps, cfg.train.max_steps)
    if total_steps == 0:
        raise UserError(f"data.train_input: {train_loader.rows} rows give no full batch of {d.batch_size} "
                        f"on {dist.world} process(es); lower data.batch_size or set drop_remainder: false")
    accum = cfg.train.grad_accum_steps
    fused = dist.device.type in ("cpu", "cuda") and cfg.optimizer.dense.type != "sgd"
    opts = build_optimizers(module, module.engine.embedding_parameters(), cfg.optimizer, fused=fused)
    scheds = build_schedulers(opts, math.ceil(total_steps / accum), cfg.optimizer)

    # ---- resume ------------------------------------------------------------------------
    step, epoch0, skip, best = 0, 0, 0, None
    found = ckpt.list_checkpoints(model_dir) if resume else []
    if found:
        state = ckpt.load(found[-1])
        try:
            module.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise UserError(f"{found[-1]}: does not fit this model ({str(exc).splitlines()[0][:160]}); "
                            "use a new train.model_dir") from exc
        for o, s in zip(opts, state["optimizers"]):
            o.load_state_dict(s)
        for sc, s in zip(scheds, state["schedulers"]):
            sc.load_state_dict(s)
        step, epoch0, skip, best = state["step"], state["epoch"], state["step_in_epoch"], state.get("best")
        ckpt.set_rng_state(state["rng"])
        console.log(f"resuming from {found[-1]} (step {step}, epoch {epoch0}, batch {skip})")
    else:
        console.log(f"starting fresh: no checkpoint in {model_dir}")
        if init is not None:  # every rank loads the same file: the ranks stay equal
            warm = warm_start(module, init)
            warm.report()

    log = _Log(model_dir, dist.is_main, step if found else None)
    last_saved = step if found else -1
    checkpoint_seconds = cfg.train.checkpoint_minutes * 60 if cfg.train.checkpoint_minutes else None
    last_save_time = _clock()

    def save(epoch: int, in_epoch: int, metrics: dict[str, float] | None) -> None:
        nonlocal best, last_saved, last_save_time
        if dist.is_main:
            payload = {"model": module.state_dict(), "optimizers": [o.state_dict() for o in opts],
                       "schedulers": [s.state_dict() for s in scheds], "step": step, "epoch": epoch,
                       "step_in_epoch": in_epoch, "rng": ckpt.rng_state(), "best": best,
                       "config": dump_config(cfg), "input_spec": spec.to_json(),
                       "extras": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in extras.items()}}
            path = ckpt.checkpoint_dir(model_dir) / f"ckpt-{step:08d}.pt"
            value = (metrics or {}).get(cfg.train.best_metric)
            if value is not None and math.isfinite(value):
                better = best is None or (value > best if cfg.train.best_mode == "max" else value < best)
                if better:
                    best = value
                    payload["best"] = best
                    ckpt.save(ckpt.checkpoint_dir(model_dir) / "best.pt", payload)
            ckpt.save(path, payload)
            ckpt.prune(model_dir, cfg.train.keep_checkpoints)
        last_saved = step
        D.barrier()
        last_save_time = _clock()

    # ---- the loop ----------------------------------------------------------------------
    model.train()
    eval_metrics: dict[str, float] = {}
    window_loss, window_n, seen, t0 = 0.0, 0, 0, time.perf_counter()
    with console.progress("train", total=total_steps) as bar:
        bar.advance(step)
        for epoch in range(epoch0, cfg.train.epochs):
            if step >= total_steps:
                break
            batches = train_loader.batches(epoch)
            for _ in range(skip):  # data position of a resumed run
                next(batches)
            in_epoch = skip
            skip = 0
            while in_epoch < steps_per_epoch[epoch] and step < total_steps:
                batch = _to(next(batches), dist.device)
                last_micro = (step + 1) % accum == 0 or step + 1 == total_steps
                sync = model.no_sync() if (dist.enabled and not last_micro) else contextlib.nullcontext()
                with sync:
                    logits = model(batch)
                    loss = module.loss(logits, batch)
                    (loss / accum).backward()
                if last_micro:
                    if dist.enabled and sparse_grads:
                        D.average_row_grads(module.engine.embedding_parameters())
                    if cfg.optimizer.clip_grad_norm:
                        dense = [p for p in module.parameters() if p.grad is not None and not p.grad.is_sparse]
                        torch.nn.utils.clip_grad_norm_(dense, cfg.optimizer.clip_grad_norm)
                    for o in opts:
                        o.step()
                    for o in opts:
                        o.zero_grad(set_to_none=True)
                    for s in scheds:
                        s.step()
                step += 1
                in_epoch += 1
                n = next(iter(batch.values())).shape[0]
                seen += n
                window_loss += float(loss.detach()) * n
                window_n += n
                fault_point("train.step")
                time_due = False
                if step % cfg.train.log_every == 0 or step == total_steps:
                    # every rank saves at the same step: the clock of any rank that is due decides
                    elapsed = _clock() - last_save_time
                    time_due = checkpoint_seconds is not None and D.any_true(elapsed >= checkpoint_seconds,
                                                                             dist.device)
                    mean_loss = D.mean_scalar(window_loss / max(window_n, 1), dist.device)
                    rate = seen * dist.world / max(time.perf_counter() - t0, 1e-9)
                    log.write("train", step, {"loss": mean_loss, "lr": opts[0].param_groups[0]["lr"],
                                              "samples_per_s": rate, "epoch": epoch})
                    bar.update(info=f"loss {mean_loss:.4f}  {rate:,.0f} samples/s")
                    window_loss, window_n = 0.0, 0
                bar.advance(1)
                metrics = None
                if eval_loader is not None and cfg.train.eval_every and step % cfg.train.eval_every == 0 \
                        and step < total_steps:
                    metrics = evaluate(model, eval_loader, cfg, dist)
                    log.write("eval", step, metrics)
                    eval_metrics = metrics
                step_due = bool(cfg.train.checkpoint_every) and step % cfg.train.checkpoint_every == 0
                if (step_due or time_due) and step < total_steps:
                    done_epoch = in_epoch >= steps_per_epoch[epoch]
                    save(epoch + 1 if done_epoch else epoch, 0 if done_epoch else in_epoch, metrics)
            del batches
    train_seconds = time.perf_counter() - t0
    if eval_loader is not None:
        # a finished run rerun: its final evaluation is already logged (no duplicate step in metrics.jsonl)
        done = D.broadcast_object(log.last("eval", step) if found and last_saved == step else None)
        if done is not None:
            eval_metrics = done
        else:
            eval_metrics = evaluate(model, eval_loader, cfg, dist)
            log.write("eval", step, eval_metrics)
    if last_saved != step:
        save(cfg.train.epochs, 0, eval_metrics)
    log.close()
    summary = {"model_dir": str(model_dir), "steps": step, "processes": dist.world,
               "train_rows_per_epoch": train_loader.rows, "seconds": round(train_seconds, 2),
               "samples_per_s": round(seen * dist.world / max(train_seconds, 1e-9), 1)}
    summary.update({f"eval_{k}": round(v, 5) if isinstance(v, float) else v for k, v in eval_metrics.items()})
    if best is not None:
        summary[f"best_{cfg.train.best_metric}"] = round(best, 5)
    if not found and init is not None:
        summary.update(init_checkpoint=str(init), init_loaded=len(warm.loaded))
    return summary
