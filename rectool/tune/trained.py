"""One trained model in ``rectool tune``: train → export → embed → retrieve, for each retrieve-term variant.

Inputs: the model's space (``rectool.tune.space.TrainedSpace``: a train config and its searched
settings), the trial's settings, a ``Split`` with a next-item dataset, and a work directory.
Outputs: under ``work``, the model directory, its export, the item embeddings and one recall table
per retrieve variant (``retrieve --method brute``: every item scored, the inputs' ``seen_item_ids``
excluded unless ``--exclude none``), the paths returned in variant order.

The trial's config is the model's with the trial's settings applied, its training input the split's
``train/``, its ``model_dir`` under ``work``, and no ``eval_input``: the test split is never read,
and the validation metric is computed here, on the retrieved lists. Every step is the library
function its command calls, so a trial is exactly ``rectool train`` → ``export`` → ``embed`` →
``retrieve``.

    paths = fit_and_retrieve(space, {"model.loss.temperature": 0.1}, split, Path("work/trial-3"), k=20)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rectool.retrieval.options import RetrieveOptions
from rectool.tune.space import TrainedSpace, model_config
from rectool.tune.splits import Split


def trial_config(space: TrainedSpace, settings: dict[str, Any], split: Split, model_dir: Path) -> Any:
    """The config a trial trains: the model's, the settings applied, the split's data and ``model_dir``."""
    assert split.dataset is not None
    cfg = model_config(space, settings)
    data = cfg.data.model_copy(update={"train_input": str(split.dataset / "train"), "eval_input": None})
    return cfg.model_copy(update={"data": data,
                                  "train": cfg.train.model_copy(update={"model_dir": str(model_dir)})})


def fit_and_retrieve(space: TrainedSpace, settings: dict[str, Any], split: Split, work: Path, *, k: int,
                     variants: list[dict[str, float]] | None = None) -> tuple[Any, list[Path]]:
    """Train the trial's config on the split, then retrieve its users' top ``k`` once per variant."""
    from rectool.retrieval.embed import embed
    from rectool.retrieval.retrieve import retrieve
    from rectool.train.export import export
    from rectool.train.trainer import train

    assert split.dataset is not None and split.inputs is not None
    cfg = trial_config(space, settings, split, work / "model")
    train(cfg, resume=False)
    export(work / "model", work / "export", overwrite=True)
    embed(work / "export", str(split.dataset / "items"), work / "items", overwrite=True)
    paths = []
    for i, variant in enumerate(variants or [{}]):
        options = RetrieveOptions.of(method="brute", items=str(work / "items"), topk=k,
                                     exclude_seen=split.exclude is not None, **variant)
        retrieve(options, work / "export", str(split.inputs), work / f"recalls-{i}", overwrite=True)
        paths.append(work / f"recalls-{i}")
    return cfg, paths
