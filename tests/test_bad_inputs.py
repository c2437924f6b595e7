"""A catalogue of bad inputs, one table row per case, across every command.

Each case runs the real CLI (``CliRunner``) on one bad input and checks the promise of
``rectool.errors``: exit code 2; stderr is one line, printable, without a traceback, that
names the file, row or field (the case's ``needle``); nothing is left at the output path
(no temp sibling either); and, for the cases marked ``existing``, an output already at the
path (replaced only with ``--overwrite``) is untouched, byte for byte.

The small valid artifacts the cases need (events, features, samples, predictions, a DeepFM
and a two-tower export, embeddings, an HNSW index and graph, a tree, recalls) are built
once for the module from tiny generated data.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import shutil
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from retrieval_helpers import clustered, write_embeddings, write_lists
from typer.testing import CliRunner

from helpers import HAND_ROWS, retrieval_config, tianchi_events, toy_config, write_toy_ctr, write_toy_sequences
from rectool.cli import app

Arts = dict[str, str]
Maker = Callable[[Path, Arts], Path]
TIANCHI_HEADER = "user_id,item_id,behavior_type,user_geohash,item_category,time"
ITEMS = ["10,,100", "11,,100", "12,,200", "13,,200", "14,,300", "15,,300"]


# ----------------------------------------------------------------------------- the artifacts, built once


@pytest.fixture(scope="module", autouse=True)
def _paid_once() -> Iterator[None]:
    """Two costs that nothing in this module changes, paid once instead of per case: Typer builds the
    click command anew on every invoke (~0.1 s), and ``torch.export.load`` reads a program (~1 s)."""
    import functools

    import torch
    import typer.main
    import typer.testing

    command = typer.main.get_command(app)
    real_load = torch.export.load
    load = functools.lru_cache(maxsize=None)(lambda path, mtime: real_load(path))  # a rewritten file reloads
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(typer.testing, "_get_command", lambda _app: command)
        mp.setattr(torch.export, "load", lambda f: load(os.fspath(f), os.stat(f).st_mtime_ns))
        yield


def _run(*args: str) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, f"setup: rectool {' '.join(map(str, args))} failed:\n{res.stderr}"
    return res.stdout.strip()


@pytest.fixture(scope="module")
def arts(tmp_path_factory: pytest.TempPathFactory) -> Arts:
    """Every valid artifact the cases start from, by name (paths as strings, for ``str.format``)."""
    from rectool.ranking.dataset import build_dataset
    from rectool.ranking.features import build_features
    from rectool.retrieval.formats import TopK, write_recalls

    root = tmp_path_factory.mktemp("bad_inputs")
    a: dict[str, Path] = {}
    # ranking: the hand-written Tianchi log, its features, samples, predictions and an F1 scan
    a["ev"], a["items"] = tianchi_events(root / "t", HAND_ROWS, items=ITEMS)
    a["raw_user"], a["raw_item"] = root / "t" / "user.csv", root / "t" / "item.csv"
    build_features(a["ev"], root / "features", items=a["items"], threads=1, memory_limit="1GB")
    build_dataset(a["ev"], root / "features", root / "samples", items=a["items"], threads=1, memory_limit="1GB")
    a["feat"], a["samples"], a["samples_eval"] = root / "features", root / "samples", root / "samples" / "eval"
    a["pred"] = Path(_run("baseline", "--samples", a["samples"] / "eval", "-o", root / "pred", "-q"))
    a["scan"] = Path(_run("eval-f1", "--pred-path", a["pred"], "--label-path", a["samples"] / "eval",
                          "-o", root / "scan", "-q"))
    a["truth_csv"] = root / "truth.csv"
    a["truth_csv"].write_text("user_id,item_id\n1,10\n2,10\n")
    # a DeepFM on the toy CTR table, trained for one short epoch and exported
    a["ctr"] = write_toy_ctr(root / "ctr", rows=400, files=2, row_group=200)
    a["ctr_file"] = a["ctr"] / "part-1.parquet"
    cfg = toy_config(a["ctr"], root / "model")
    cfg["train"].update(epochs=1, checkpoint_minutes=None)
    a["cfg"] = root / "ctr.yaml"
    a["cfg"].write_text(yaml.safe_dump(cfg))
    a["model_dir"] = Path(_run("train", "-c", a["cfg"], "-q"))
    a["export"] = Path(_run("export", "--model-dir", a["model_dir"], "--export-dir", root / "export", "-q"))
    # a two-tower on toy sequences, its export, item embeddings, an HNSW index and graph, a tree
    seq = write_toy_sequences(root / "seq", users=40, items=300, clusters=10, length=6)
    a["seq_train"], a["seq_items"] = seq / "train", seq / "items"
    tcfg = retrieval_config(seq, root / "tt")
    tcfg["train"].update(epochs=1, checkpoint_minutes=None)
    a["tt_cfg"] = root / "tt.yaml"
    a["tt_cfg"].write_text(yaml.safe_dump(tcfg))
    a["tt_export"] = Path(_run("export", "--model-dir", _run("train", "-c", a["tt_cfg"], "-q"),
                               "--export-dir", root / "tt_export", "-q"))
    a["emb"] = Path(_run("embed", "--model", a["tt_export"], "--items", a["seq_items"], "-o", root / "emb", "-q"))
    a["index"] = Path(_run("hnsw", "build", "--input", a["emb"], "-o", root / "index", "-q"))
    a["graph"] = Path(_run("hnsw", "graph", "--index", a["index"], "-o", root / "graph", "-q"))
    a["emb8"] = write_embeddings(root / "emb8" / "part-0.parquet", clustered(50, 8, seed=1)).parent
    a["index8"] = Path(_run("hnsw", "build", "--input", a["emb8"], "-o", root / "index8", "-q"))
    a["tree"] = Path(_run("tree", "init", "--item-input-path", a["seq_items"], "--item-id-field", "item_id",
                          "--cate-id-field", "category_id", "--tree-output-dir", root / "tree", "-q"))
    # retrieval evaluation: truth lists and recalls for the same users
    a["truth"] = write_lists(root / "truth" / "part-0.parquet", [1, 2, 3], [[10], [11, 12], [13]]).parent
    ids = np.array([[10, 11], [12, 13], [14, 15]], np.int64)
    write_recalls(root / "recalls", np.array([1, 2, 3]),
                  TopK(ids, np.ones((3, 2), np.float32), np.full(3, 2, np.int64)), method="test")
    a["recalls"] = root / "recalls"
    return {k: str(v) for k, v in a.items()}


# ----------------------------------------------------------------------------- makers of bad inputs


def _last_parquet(path: Path) -> Path:
    return path if path.is_file() else sorted(path.rglob("*.parquet"))[-1]


def _damaged(src: str, damage: Callable[[Path], None]) -> Maker:
    """A copy of artifact ``src`` (a file, or a directory with its ``_meta.json``) whose last parquet
    file is damaged; the maker returns the copy."""
    def make(tmp: Path, a: Arts) -> Path:
        source = Path(a[src])
        copy = tmp / f"bad_{source.name}"
        if source.is_dir():
            shutil.copytree(source, copy)
        else:
            shutil.copy(source, copy)
        damage(_last_parquet(copy))
        return copy
    return make


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _corrupt_pages(path: Path) -> None:
    """Garbage over the first page header of every column chunk: the footer stays valid, so the file
    opens and only reading its rows fails."""
    md = pq.read_metadata(path)
    data = bytearray(path.read_bytes())
    for rg in range(md.num_row_groups):
        for c in range(md.num_columns):
            col = md.row_group(rg).column(c)
            offset = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
            data[offset:offset + 12] = b"\xff" * 12
    path.write_bytes(bytes(data))


def truncated(src: str) -> Maker:
    return _damaged(src, _truncate)


def zero_byte(src: str) -> Maker:
    return _damaged(src, _empty)


def corrupt_page(src: str) -> Maker:
    return _damaged(src, _corrupt_pages)


def text(name: str, content: str | bytes) -> Maker:
    def make(tmp: Path, a: Arts) -> Path:
        path = tmp / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path
    return make


def tianchi_csv(*rows: str, header: str = TIANCHI_HEADER) -> Maker:
    return text("user.csv", "\n".join([header, *rows]) + "\n")


def table(name: str, columns: dict[str, pa.Array | list]) -> Maker:
    def make(tmp: Path, a: Arts) -> Path:
        path = tmp / name
        pq.write_table(pa.table(columns), path)
        return path
    return make


def config(src: str, edit: Callable[[dict], None]) -> Maker:
    """A copy of config ``src`` changed by ``edit``."""
    def make(tmp: Path, a: Arts) -> Path:
        cfg = yaml.safe_load(Path(a[src]).read_text())
        edit(cfg)
        path = tmp / "bad.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path
    return make


def _no_wide(cfg: dict) -> None:
    cfg["model"]["type"] = "wide_and_deep"
    cfg["feature_groups"].pop("wide", None)


def _without_stats(cfg: dict) -> None:
    """No normaliser that needs statistics: nothing reads the rows before the training loop."""
    cfg["features"] = [f for f in cfg["features"] if f.get("normalizer") not in ("zscore", "minmax")]
    cfg["feature_groups"] = {g: [n for n in names if any(f["name"] == n for f in cfg["features"])]
                             for g, names in cfg["feature_groups"].items()}


def _ids_beyond_buckets(cfg: dict) -> None:
    next(f for f in cfg["features"] if f["name"] == "item_id")["num_buckets"] = 50


GARBAGE = bytes(range(256)) * 40  # every byte value, control characters included
STDIN_GARBAGE = b"this is not an Arrow IPC stream\x00\x01\x02" * 10


# ----------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Case:
    """``argv`` and ``needle`` are templates over the artifacts, ``{out}`` (the output path, in a fresh
    folder) and the names of ``make``; ``existing`` puts an old output at ``{out}`` first (the case
    passes ``--overwrite``) and checks it is untouched; ``deny`` names a path whose open/mkdir fails
    with EACCES (the tests run as root, so chmod could not stop them)."""

    id: str
    argv: str
    needle: str
    make: dict[str, Maker] = field(default_factory=dict)
    stdin: bytes | None = None
    existing: bool = False
    deny: str | None = None
    out: str = "{out}"
    marks: tuple = ()


TRAIN = "train -c {cfg} --set train.model_dir={out}"
# a corrupt page read only while training (or evaluating) is found after the run said "starting fresh":
# those cases run quietly (-q), and the model_dir that run created is removed with the error
TT = "train -c {tt_cfg} --set train.model_dir={out}"
BAD_PAGE = "not readable as parquet"

CASES = [
    # ---- synth: bad flag values
    Case("synth-zero-users", "synth -o {out} --users 0", "--users"),
    Case("synth-negative-days", "synth -o {out} --days -1", "--days"),
    Case("synth-unknown-dataset", "synth -o {out} --dataset movielens", "--dataset movielens"),
    Case("synth-unknown-layout", "synth -o {out} --layout sideways", "--layout sideways"),
    # ---- convert: malformed rows, wrong formats, missing/empty/garbage files, permissions
    Case("convert-binary-garbage-as-csv", "convert {bad} -o {out}", "{bad}: line 1 has header columns",
         {"bad": text("garbage.csv", GARBAGE)}),
    Case("convert-wrong-field-count", "convert {bad} -o {out}", "{bad}:3:",
         {"bad": tianchi_csv("1,2,1,,3,2014-12-01 10", "1,2,1,3,2014-12-01 10")}),
    Case("convert-id-not-a-number", "convert {bad} -o {out}", "{bad}:2: column user_id is not a number",
         {"bad": tianchi_csv("u1,2,1,,3,2014-12-01 10")}),
    Case("convert-id-1e23-has-its-line", "convert {bad} -o {out}", "{bad}:3: column user_id",
         {"bad": tianchi_csv("1,2,1,,3,2014-12-01 10", "1e23,2,1,,3,2014-12-01 10")}),
    Case("convert-id-beyond-int64", "convert {bad} -o {out}", "{bad}:2: column item_id",
         {"bad": tianchi_csv("1,99999999999999999999,1,,3,2014-12-01 10")}),
    Case("convert-unix-time-1e23", "convert -f userbehavior {bad} -o {out}", "{bad}:2: timestamp",
         {"bad": text("ub.csv", "1,2,3,pv,1511544070\n1,2,3,pv,1e23\n")}),
    Case("convert-unknown-behaviour", "convert {bad} -o {out}", "{bad}:2: behavior_type",
         {"bad": tianchi_csv("1,2,9,,3,2014-12-01 10")}),
    Case("convert-unparsable-time", "convert {bad} -o {out}", "{bad}:2: time does not match",
         {"bad": tianchi_csv("1,2,1,,3,01/12/2014")}),
    Case("convert-bad-row-after-blank-lines", "convert {bad} -o {out}", "{bad}:5: behavior_type",
         {"bad": tianchi_csv("", "1,2,1,,3,2014-12-01 10", "", "1,2,7,,3,2014-12-01 10")}),
    Case("convert-item-file-as-events", "convert {raw_item} -o {out}", "--format tianchi-item"),
    Case("convert-user-lines-not-integers", "convert -f user-lines {bad} -o {out}", "{bad}:2: expected",
         {"bad": text("lines.txt", "1 2 3\n4 five 6\n")}),
    Case("convert-pairs-three-tokens", "convert -f pairs {bad} -o {out}", "{bad}:1: expected `user item`",
         {"bad": text("pairs.txt", "1 2 3\n")}),
    Case("convert-missing-file", "convert {out}.csv -o {out}", "{out}.csv: no such file"),
    Case("convert-directory-as-file", "convert {ev} -o {out}", "{ev}: is a directory"),
    Case("convert-zero-byte-file", "convert {bad} -o {out}", "{bad}: the file is empty",
         {"bad": text("empty.csv", b"")}),
    Case("convert-truncated-gzip", "convert {bad} -o {out}", "{bad}",
         {"bad": text("user.csv.gz", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03+-N")}),
    Case("convert-unknown-format", "convert {raw_user} -f parquet -o {out}", "--format parquet"),
    Case("convert-generic-without-schema", "convert {raw_user} -f generic -o {out}", "--schema"),
    Case("convert-schema-yaml-syntax", "convert {raw_user} -f generic --schema {bad} -o {out}", "{bad}: not valid YAML",
         {"bad": text("spec.yaml", "columns: [name: user_id\n")}),
    Case("convert-schema-unknown-key", "convert {raw_user} -f generic --schema {bad} -o {out}", "{bad}: field colour",
         {"bad": text("spec.yaml", "colour: red\ncolumns: [{name: user_id}, {name: item_id}]\n")}),
    Case("convert-bad-behavior-flag", "convert -f pairs {bad} --behavior 9 -o {out}", "--behavior 9",
         {"bad": text("pairs.txt", "1 2\n")}),
    Case("convert-unreadable-input", "convert {bad} -o {out}", "{bad}: permission denied",
         {"bad": tianchi_csv("1,2,1,,3,2014-12-01 10")}, deny="{bad}"),
    Case("convert-bad-row-keeps-old-output", "convert {bad} -o {out} --overwrite", "{bad}:2:",
         {"bad": tianchi_csv("1,2,8,,3,2014-12-01 10")}, existing=True),
    # ---- features: corrupt partitions (DuckDB), wrong artifacts, bad flags, permissions
    Case("features-truncated-partition", "features --events {bad} -o {out}", "dt=2014-12-18/part-00000.parquet",
         {"bad": truncated("ev")}),
    Case("features-zero-byte-partition", "features --events {bad} -o {out}", "dt=2014-12-18/part-00000.parquet",
         {"bad": zero_byte("ev")}),
    Case("features-corrupt-page-partition", "features --events {bad} -o {out}", "dt=2014-12-18/part-00000.parquet",
         {"bad": corrupt_page("ev")}),
    Case("features-corrupt-page-keeps-old-output", "features --events {bad} -o {out} --overwrite",
         f"{{bad}}: {{bad}}/dt=2014-12-18/part-00000.parquet: {BAD_PAGE}", {"bad": corrupt_page("ev")},
         existing=True),
    Case("features-items-as-events", "features --events {items} -o {out}", "'items' artifact"),
    Case("features-events-from-stdin", "features --events - -o {out}", "--events -"),
    Case("features-bad-cutoff", "features --events {ev} --cutoffs 2014-13-01 -o {out}", "--cutoffs '2014-13-01'"),
    Case("features-zero-window", "features --events {ev} --windows 0,all -o {out}", "--windows"),
    Case("features-endless-window", "features --events {ev} --windows 99999999999999999999 -o {out}", "--windows"),
    Case("features-bad-memory-limit", "features --events {ev} --memory-limit lots -o {out}", "--memory-limit 'lots'"),
    Case("features-zero-threads", "features --events {ev} --threads 0 -o {out}", "--threads"),
    Case("features-raw-items-bad-header", "features --events {ev} --items {bad} -o {out}", "{bad}: first column",
         {"bad": text("items.csv", "sku,geohash,category\n1,,2\n")}),
    Case("features-output-parent-unwritable", "features --events {ev} -o {out}/features", "{out}/features",
         deny="{out}", out="{out}/features"),
    # ---- dataset: ranking and next-item
    Case("dataset-missing-cutoff", "dataset --events {ev} --features {feat} --label-days 2014-12-10,2014-12-11 "
         "-o {out}", "--features {feat}: has no cut-off"),
    Case("dataset-unknown-task", "dataset --task clustering --events {ev} -o {out}", "--task clustering"),
    Case("dataset-ranking-without-features", "dataset --events {ev} -o {out}", "--features is required"),
    Case("dataset-truncated-feature-table", "dataset --events {ev} --features {bad} --items {items} -o {out}",
         "--features {bad}: {bad}/", {"bad": truncated("feat")}),
    Case("dataset-negative-neg-ratio", "dataset --events {ev} --features {feat} --neg-ratio -1 -o {out}",
         "--neg-ratio -1"),
    Case("dataset-zero-candidate-days", "dataset --events {ev} --features {feat} --candidate-days 0 -o {out}",
         "--candidate-days"),
    Case("dataset-bad-label-day", "dataset --events {ev} --features {feat} --label-days yesterday -o {out}",
         "--label-days 'yesterday'"),
    Case("dataset-next-item-corrupt-events", "dataset --task next-item --events {bad} --n-test 1 --n-valid 0 "
         "--min-behaviors 1 -o {out}", f"{{bad}}/dt=2014-12-18/part-00000.parquet: {BAD_PAGE}",
         {"bad": corrupt_page("ev")}),
    Case("dataset-next-item-endless-history", "dataset --task next-item --events {ev} --max-history "
         "99999999999999999999 -o {out}", "'--max-history'"),
    Case("dataset-next-item-bad-targets", "dataset --task next-item --events {ev} --targets some -o {out}",
         "--targets some"),
    Case("dataset-next-item-too-few-users", "dataset --task next-item --events {ev} --n-test 50 -o {out}",
         "--n-test 50"),
    Case("dataset-given-without-test-events", "dataset --task next-item --events {ev} --protocol given -o {out}",
         "--test-events"),
    Case("dataset-next-item-flag-for-ranking", "dataset --events {ev} --features {feat} --n-test 5 -o {out}",
         "--n-test is for --task next-item"),
    # ---- baseline
    Case("baseline-unknown-rule", "baseline --rule coin-flip --samples {samples} -o {out}", "--rule coin-flip"),
    Case("baseline-without-samples", "baseline -o {out}", "needs --samples"),
    Case("baseline-corrupt-samples", "baseline --samples {bad} -o {out}", f"{{bad}}/part-00000.parquet: {BAD_PAGE}",
         {"bad": corrupt_page("samples_eval")}),
    Case("baseline-popularity-without-train", "baseline --rule popularity -o {out}", "needs --train"),
    Case("baseline-zero-k", "baseline --rule popularity --train {ev} --k 0 -o {out}", "--k"),
    Case("baseline-predictions-as-samples", "baseline --samples {pred} -o {out}", "'predictions' artifact"),
    # ---- train: config errors, bad data
    Case("train-yaml-syntax", "train -c {bad}", "{bad}: not valid YAML", {"bad": text("x.yaml", "data: [1, 2\n")}),
    Case("train-unknown-key", "train -c {bad}", "{bad}: train.epoch: unknown key (did you mean 'epochs'?)",
         {"bad": config("cfg", lambda c: c["train"].update(epoch=2))}),
    Case("train-wrong-type", TRAIN.replace("{cfg}", "{bad}"), "{bad}: train.epochs",
         {"bad": config("cfg", lambda c: c["train"].update(epochs="many"))}),
    Case("train-wide-and-deep-without-wide", TRAIN.replace("{cfg}", "{bad}"),
         "feature_groups: model wide_and_deep reads the group(s) wide", {"bad": config("cfg", _no_wide)}),
    Case("train-zero-byte-data", TRAIN + " --set data.train_input={bad}", "{bad}", {"bad": zero_byte("ctr")}),
    Case("train-truncated-data", TRAIN + " --set data.train_input={bad}", "{bad}", {"bad": truncated("ctr")}),
    Case("train-corrupt-page-data", TRAIN + " --set data.train_input={bad}", f"{{bad}}/part-1.parquet: {BAD_PAGE}",
         {"bad": corrupt_page("ctr")}),
    Case("train-corrupt-page-data-read-in-the-loop",
         TRAIN.replace("{cfg}", "{cfg2}") + " -q --set data.train_input={bad}",
         "{bad}/part-1.parquet", {"bad": corrupt_page("ctr"), "cfg2": config("cfg", _without_stats)},
         ),
    Case("train-zero-byte-eval-input", TRAIN + " --set data.eval_input={bad}", "data.eval_input {bad}",
         {"bad": zero_byte("ctr_file")}),
    Case("train-corrupt-page-eval-input", TRAIN + " -q --set data.eval_input={bad}", "{bad}",
         {"bad": corrupt_page("ctr_file")}),
    Case("train-missing-column", TRAIN + " --set data.train_input={bad}", "column 'city' is not in {bad}",
         {"bad": table("noprice.parquet", {"user_id": [1], "item_id": [2], "label": [1]})}),
    Case("train-missing-data", TRAIN + " --set data.train_input={out}.parquet", "{out}.parquet: no such file"),
    Case("train-set-without-value", TRAIN + " --set train.epochs", "--set train.epochs"),
    Case("train-unknown-device", TRAIN + " --device tpu", "--device"),
    Case("train-unreadable-config", "train -c {bad}", "{bad}: permission denied",
         {"bad": config("cfg", lambda c: None)}, deny="{bad}"),
    # ---- config check
    Case("config-check-wide-and-deep-without-wide", "config check {bad}", "model wide_and_deep reads the group(s) wide",
         {"bad": config("cfg", _no_wide)}),
    Case("config-check-not-a-mapping", "config check {bad}", "{bad}: the config must be a mapping",
         {"bad": text("x.yaml", "- data\n- model\n")}),
    Case("config-check-missing-file", "config check {out}.yaml", "{out}.yaml: no such file"),
    Case("config-check-unknown-feature", "config check {bad}", "feature_groups.deep: unknown feature 'nope'",
         {"bad": config("cfg", lambda c: c["feature_groups"]["deep"].append("nope"))}),
    Case("config-check-unknown-model", "config check {bad}", "model: 'type' 'fm' is unknown",
         {"bad": config("cfg", lambda c: c["model"].update(type="fm"))}),
    Case("config-check-ids-beyond-num-buckets", "config check {bad}", "outside num_buckets=50",
         {"bad": config("cfg", _ids_beyond_buckets)}),
    Case("config-check-unreadable", "config check {bad}", "{bad}: permission denied",
         {"bad": config("cfg", lambda c: None)}, deny="{bad}"),
    # ---- export
    Case("export-missing-model-dir", "export --model-dir {out}_model --export-dir {out}", "{out}_model"),
    Case("export-no-checkpoint", "export --model-dir {bad} --export-dir {out}", "{bad}",
         {"bad": lambda tmp, a: _folder(tmp / "empty_model")}),
    Case("export-unknown-checkpoint-keeps-old", "export --model-dir {model_dir} --checkpoint nope --export-dir {out} "
         "--overwrite", "nope", existing=True),
    # ---- predict
    Case("predict-zero-batch-size", "predict --model {export} --input {ctr} -o {out} --batch-size 0",
         "--batch-size"),
    Case("predict-zero-byte-input", "predict --model {export} --input {bad} -o {out}", f"{{bad}}: {BAD_PAGE}",
         {"bad": zero_byte("ctr_file")}),
    Case("predict-truncated-input", "predict --model {export} --input {bad} -o {out}", "{bad}",
         {"bad": truncated("ctr")}),
    Case("predict-corrupt-page-input", "predict --model {export} --input {bad} -o {out}",
         f"{{bad}}/part-1.parquet: {BAD_PAGE}", {"bad": corrupt_page("ctr")}),
    Case("predict-corrupt-page-keeps-old", "predict --model {export} --input {bad} -o {out} --overwrite",
         f"{{bad}}: {BAD_PAGE}", {"bad": corrupt_page("ctr_file")}, existing=True),
    Case("predict-garbage-input", "predict --model {export} --input {bad} -o {out}", "{bad}",
         {"bad": text("x.parquet", GARBAGE)}),
    Case("predict-missing-column", "predict --model {export} --input {bad} -o {out}", "missing column(s)",
         {"bad": table("t.parquet", {"user_id": [1], "item_id": [2]})}),
    Case("predict-id-beyond-num-buckets", "predict --model {export} --input {bad} -o {out}",
         "id 100000 is outside num_buckets=500",
         {"bad": lambda tmp, a: _with_column(a["ctr_file"], tmp / "ids.parquet", "item_id", 100_000)}),
    Case("predict-stdin-garbage", "predict --model {export} --input - -o {out}", "stdin: not an Arrow IPC stream",
         stdin=STDIN_GARBAGE),
    Case("predict-huge-batch-size", "predict --model {export} --input {ctr} -o {out} --batch-size 99999999999999999999",
         "'--batch-size'"),
    Case("predict-tower-export", "predict --model {tt_export} --input {ctr} -o {out}", "has no model.pt2"),
    Case("predict-unknown-output-column", "predict --model {export} --input {ctr} -o {out} --output-columns logit",
         "--output-columns logit"),
    Case("predict-predictions-as-model", "predict --model {pred} --input {ctr} -o {out}", "'predictions' artifact"),
    # ---- embed
    Case("embed-negative-batch-size", "embed --model {tt_export} --items {seq_items} -o {out} --batch-size -1",
         "--batch-size"),
    Case("embed-corrupt-page-items", "embed --model {tt_export} --items {bad} -o {out}",
         f"{{bad}}/part-0.parquet: {BAD_PAGE}", {"bad": corrupt_page("seq_items")}),
    Case("embed-ranking-export", "embed --model {export} --items {seq_items} -o {out}", "has no item program"),
    Case("embed-missing-column", "embed --model {tt_export} --items {bad} -o {out}", "missing column(s) category_id",
         {"bad": table("items.parquet", {"item_id": [1, 2]})}),
    Case("embed-empty-items", "embed --model {tt_export} --items {bad} -o {out}", "{bad}: has no rows",
         {"bad": table("items.parquet", {"item_id": pa.array([], pa.int64()),
                                         "category_id": pa.array([], pa.int64())})}),
    Case("embed-stdin-garbage", "embed --model {tt_export} --items - -o {out}", "stdin: not an Arrow IPC stream",
         stdin=STDIN_GARBAGE),
    # ---- eval-f1
    Case("eval-f1-topk-overflow", "eval-f1 --pred-path {pred} --label-path {samples}/eval --topk-list "
         "99999999999999999999 -o {out}", "--topk-list"),
    Case("eval-f1-nan-threshold", "eval-f1 --pred-path {pred} --label-path {samples}/eval --threshold-list nan "
         "-o {out}", "--threshold-list 'nan'"),
    Case("eval-f1-zero-cap", "eval-f1 --pred-path {pred} --label-path {samples}/eval --max-per-user 0 -o {out}",
         "--max-per-user '0'"),
    Case("eval-f1-empty-predictions", "eval-f1 --pred-path {bad} --label-path {truth_csv} -o {out}",
         "{bad}: holds no predictions",
         {"bad": table("p.parquet", {"user_id": pa.array([], pa.int64()), "item_id": pa.array([], pa.int64()),
                                     "score": pa.array([], pa.float32())})}),
    Case("eval-f1-corrupt-page-predictions", "eval-f1 --pred-path {bad} --label-path {truth_csv} -o {out}",
         BAD_PAGE, {"bad": corrupt_page("pred")}),
    Case("eval-f1-files-of-two-tables", "eval-f1 --pred-path {bad} --label-path {truth_csv} -o {out}",
         "{bad}/part-1.parquet has column user_id as string", {"bad": lambda tmp, a: _two_tables(tmp / "mixed")}),
    Case("eval-f1-label-header", "eval-f1 --pred-path {pred} --label-path {bad} -o {out}", "{bad}: header 'user,item'",
         {"bad": text("labels.csv", "user,item\n1,2\n")}),
    Case("eval-f1-stdin-garbage", "eval-f1 --pred-path - --label-path {truth_csv} -o {out}", "stdin:",
         stdin=STDIN_GARBAGE),
    Case("eval-f1-labels-from-stdin", "eval-f1 --pred-path {pred} --label-path - -o {out}", "--label-path -"),
    Case("eval-f1-unreadable-labels", "eval-f1 --pred-path {pred} --label-path {truth_csv} -o {out}",
         "{truth_csv}: permission denied", deny="{truth_csv}"),
    Case("eval-f1-bad-labels-keep-old", "eval-f1 --pred-path {pred} --label-path {bad} -o {out} --overwrite",
         "{bad}", {"bad": text("labels.csv", "user_id,item_id\n1,x\n")}, existing=True),
    # ---- submit
    Case("submit-nan-threshold", "submit --pred-path {pred} --item-subset-path {items} -o {out} --threshold nan",
         "--threshold nan"),
    Case("submit-infinite-threshold", "submit --pred-path {pred} --item-subset-path {items} -o {out} --threshold inf",
         "--threshold inf"),
    Case("submit-unknown-format", "submit --pred-path {pred} --item-subset-path {items} -o {out} --format xml",
         "--format xml"),
    Case("submit-item-file-header", "submit --pred-path {pred} --item-subset-path {bad} -o {out}",
         "{bad}: first column is 'sku'", {"bad": text("items.csv", "sku,geohash,category\n1,,2\n")}),
    Case("submit-zero-byte-predictions", "submit --pred-path {bad} --item-subset-path {items} -o {out}", "{bad}",
         {"bad": zero_byte("pred")}),
    Case("submit-to-stdout", "submit --pred-path {pred} --item-subset-path {items} -o -", "--output -", out="{tmp}/-"),
    Case("submit-settings-from-predictions", "submit --pred-path {pred} --item-subset-path {items} -o {out} "
         "--settings-from {pred}", "--settings-from {pred}"),
    Case("submit-empty-predictions-keep-old", "submit --pred-path {bad} --item-subset-path {items} -o {out} "
         "--overwrite", "{bad}: holds no predictions",
         {"bad": table("p.parquet", {"user_id": pa.array([], pa.int64()), "item_id": pa.array([], pa.int64()),
                                     "score": pa.array([], pa.float32())})}, existing=True),
    Case("submit-stdin-garbage", "submit --pred-path - --item-subset-path {items} -o {out}", "stdin:",
         stdin=STDIN_GARBAGE),
    Case("submit-unreadable-item-file", "submit --pred-path {pred} --item-subset-path {raw_item} -o {out}",
         "{raw_item}: permission denied", deny="{raw_item}"),
    Case("submit-zero-topk", "submit --pred-path {pred} --item-subset-path {items} -o {out} --topk 0", "--topk"),
    Case("submit-topk-beyond-int64", "submit --pred-path {pred} --item-subset-path {items} -o {out} --topk "
         "99999999999999999999", "'--topk'"),
    # ---- tree init / tree cluster
    Case("tree-init-corrupt-page", "tree init --item-input-path {bad} --item-id-field item_id --cate-id-field "
         "category_id --tree-output-dir {out}", f"{{bad}}/part-0.parquet: {BAD_PAGE}",
         {"bad": corrupt_page("seq_items")}),
    Case("tree-init-branching-one", "tree init --item-input-path {seq_items} --item-id-field item_id --cate-id-field "
         "category_id --tree-output-dir {out} --n-cluster 1", "--n-cluster"),
    Case("tree-init-missing-category", "tree init --item-input-path {seq_items} --item-id-field item_id "
         "--cate-id-field brand --tree-output-dir {out}", "missing column(s) brand"),
    Case("tree-init-repeated-ids", "tree init --item-input-path {bad} --item-id-field item_id --cate-id-field "
         "category_id --tree-output-dir {out}", "item id 7 appears more than once",
         {"bad": table("items.parquet", {"item_id": [7, 7, 8], "category_id": [1, 1, 2]})}),
    Case("tree-cluster-embedding-not-a-list", "tree cluster --item-input-path {seq_items} --item-id-field item_id "
         "--embedding-field category_id --tree-output-dir {out}", "--embedding-field category_id is int64"),
    Case("tree-cluster-ragged-embeddings", "tree cluster --item-input-path {bad} --item-id-field item_id "
         "--embedding-field item_emb --tree-output-dir {out}", "all embeddings need the same dimension",
         {"bad": table("emb.parquet", {"item_id": [1, 2], "item_emb": pa.array([[0.1, 0.2], [0.3]],
                                                                              pa.list_(pa.float32()))})}),
    Case("tree-cluster-zero-byte", "tree cluster --item-input-path {bad} --item-id-field item_id --embedding-field "
         "item_emb --tree-output-dir {out}", "{bad}", {"bad": zero_byte("emb")}),
    # ---- hnsw build / hnsw graph
    Case("hnsw-build-m-zero", "hnsw build --input {emb} -o {out} --m 0", "--m"),
    Case("hnsw-build-m-one", "hnsw build --input {emb} -o {out} --m 1", "--m"),
    Case("hnsw-build-corrupt-page", "hnsw build --input {bad} -o {out}", f"{{bad}}/part-00000.parquet: {BAD_PAGE}",
         {"bad": corrupt_page("emb")}),
    Case("hnsw-build-truncated", "hnsw build --input {bad} -o {out}", "{bad}", {"bad": truncated("emb")}),
    Case("hnsw-build-add-to-other-dim", "hnsw build --input {emb8} --add-to {index} -o {out}",
         "embedding dims differ"),
    Case("hnsw-build-nan-vector", "hnsw build --input {bad} -o {out}", "item 1 has a NaN or infinite value",
         {"bad": table("emb.parquet", {"item_id": [0, 1], "item_emb": pa.array(
             [[0.1, 0.2], [float("nan"), 0.3]], pa.list_(pa.float32(), 2))})}),
    Case("hnsw-build-repeated-ids", "hnsw build --input {bad} -o {out}", "item 4 appears more than once",
         {"bad": table("emb.parquet", {"item_id": [4, 4], "item_emb": pa.array(
             [[0.1, 0.2], [0.2, 0.3]], pa.list_(pa.float32(), 2))})}),
    Case("hnsw-build-unknown-space", "hnsw build --input {emb} -o {out} --space hamming", "--space hamming"),
    Case("hnsw-build-stdin-garbage", "hnsw build --input - -o {out}", "stdin: not an Arrow IPC stream",
         stdin=STDIN_GARBAGE),
    Case("hnsw-build-corrupt-keeps-old", "hnsw build --input {bad} -o {out} --overwrite", BAD_PAGE,
         {"bad": corrupt_page("emb")}, existing=True),
    Case("hnsw-graph-embeddings-as-index", "hnsw graph --index {emb} -o {out}", "'embeddings' artifact"),
    Case("hnsw-graph-bad-levels", "hnsw graph --index {index} -o {out} --levels one", "--levels"),
    Case("hnsw-graph-garbage-index", "hnsw graph --index {bad} -o {out}", "{bad}",
         {"bad": lambda tmp, a: _garbage_index(a["index"], tmp / "index")}),
    # ---- retrieve
    Case("retrieve-unknown-method", "retrieve --method lsh --model {tt_export} --users {seq_train} -o {out}",
         "--method lsh"),
    Case("retrieve-zero-batch-size", "retrieve --method hnsw --model {tt_export} --index {index} --users {seq_train} "
         "-o {out} --batch-size 0", "--batch-size"),
    Case("retrieve-corrupt-page-users", "retrieve --method hnsw --model {tt_export} --index {index} --users {bad} "
         "-o {out} --keep-seen", f"{{bad}}/part-0.parquet: {BAD_PAGE}", {"bad": corrupt_page("seq_train")}),
    Case("retrieve-users-missing-column", "retrieve --method hnsw --model {tt_export} --index {index} --users {bad} "
         "-o {out} --keep-seen", "missing column(s)", {"bad": table("users.parquet", {"user_id": [1]})}),
    Case("retrieve-index-of-other-dim", "retrieve --method hnsw --model {tt_export} --index {index8} "
         "--users {seq_train} -o {out} --keep-seen", "--index {index8}: the query embeddings have shape"),
    Case("retrieve-tdm-with-towers", "retrieve --method tdm --model {tt_export} --tree {tree} --users {seq_train} "
         "-o {out}", "--method tdm"),
    Case("retrieve-bad-ef", "retrieve --method hnsw --model {tt_export} --index {index} --users {seq_train} "
         "-o {out} --keep-seen --ef many", "--ef many"),
    Case("retrieve-hnsw-without-index", "retrieve --method hnsw --model {tt_export} --users {seq_train} -o {out} "
         "--keep-seen", "needs --index"),
    Case("retrieve-huge-ef", "retrieve --method hnsw --model {tt_export} --index {index} --users {seq_train} "
         "-o {out} --keep-seen --ef 99999999999999999999", "--ef 99999999999999999999: give whole numbers"),
    Case("retrieve-zero-topk", "retrieve --method hnsw --model {tt_export} --index {index} --users {seq_train} "
         "-o {out} --topk 0", "--topk"),
    # ---- tune: the search file, the training table, the carving
    Case("tune-no-space", "tune --space {bad}/none.yaml --train {truth} -o {out}", "--space {bad}/none.yaml: no such "
         "file", {"bad": lambda tmp, a: tmp}),
    Case("tune-space-syntax", "tune --space {bad} --train {truth} -o {out}", "{bad}: not valid YAML",
         {"bad": text("space.yaml", "methods: {als: [1\n")}),
    Case("tune-unknown-method", "tune --space {bad} --train {truth} -o {out}", "{bad}: methods.svd",
         {"bad": text("space.yaml", "methods: {svd: {}}\n")}),
    Case("tune-train-without-users", "tune --space {space} --train {emb} -o {out}", "missing column(s) user_id",
         {"space": text("space.yaml", "methods: {ease: {l2: [10]}}\n")}),
    Case("tune-nothing-held-out", "tune --space {space} --train {truth} -o {out} --overwrite",
         "--holdout last: nothing held out",
         {"space": text("space.yaml", "methods: {ease: {l2: [10]}}\n")}, existing=True),
    # ---- eval-topk
    Case("eval-topk-zero-k", "eval-topk --recall-path {recalls} --truth-path {truth} -o {out} --k-list 0",
         "--k-list 0"),
    Case("eval-topk-k-overflow", "eval-topk --recall-path {recalls} --truth-path {truth} -o {out} --k-list "
         "99999999999999999999", "--k-list"),
    Case("eval-topk-corrupt-page-recalls", "eval-topk --recall-path {bad} --truth-path {truth} -o {out}",
         BAD_PAGE, {"bad": corrupt_page("recalls")}),
    Case("eval-topk-zero-byte-truth", "eval-topk --recall-path {recalls} --truth-path {bad} -o {out}", "{bad}",
         {"bad": zero_byte("truth")}),
    Case("eval-topk-unknown-missing-users", "eval-topk --recall-path {recalls} --truth-path {truth} -o {out} "
         "--missing-users skip", "--missing-users skip"),
    Case("eval-topk-truth-users-without-recalls", "eval-topk --recall-path {recalls} --truth-path {bad} -o {out}",
         "have no row in --recall-path", {"bad": table("truth.parquet", {"user_id": [1, 99], "item_id": [10, 11]})}),
    Case("eval-topk-user-listed-twice", "eval-topk --recall-path {bad} --truth-path {truth} -o {out}",
         "user 1 has 2 rows", {"bad": table("recalls.parquet", {
             "user_id": [1, 1], "item_ids": pa.array([[10], [11]], pa.list_(pa.int64())),
             "scores": pa.array([[1.0], [0.5]], pa.list_(pa.float32()))})}),
    Case("eval-topk-zero-n-items", "eval-topk --recall-path {recalls} --truth-path {truth} -o {out} --n-items 0",
         "--n-items"),
    Case("eval-topk-stdin-garbage", "eval-topk --recall-path - --truth-path {truth} -o {out}", "stdin:",
         stdin=STDIN_GARBAGE),
    Case("eval-topk-bad-truth-keeps-old", "eval-topk --recall-path {recalls} --truth-path {bad} -o {out} --overwrite",
         "{bad}", {"bad": zero_byte("truth")}, existing=True),
]


def _with_column(src: str, dst: Path, name: str, value: int) -> Path:
    t = pq.read_table(src)
    pq.write_table(t.set_column(t.schema.get_field_index(name), name, pa.array([value] * t.num_rows, pa.int64())),
                   dst)
    return dst


def _two_tables(folder: Path) -> Path:
    """Predictions whose second file has string user ids."""
    folder.mkdir()
    pq.write_table(pa.table({"user_id": [1, 2], "item_id": [10, 11], "score": [0.5, 0.4]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"user_id": ["u3"], "item_id": [12], "score": [0.3]}), folder / "part-1.parquet")
    return folder


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _garbage_index(src: str, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "index.bin").write_bytes(GARBAGE[:100])
    return dst


# ----------------------------------------------------------------------------- running a case


@contextlib.contextmanager
def _denied(monkeypatch: pytest.MonkeyPatch, target: str | None) -> Iterator[None]:
    """Opening or creating ``target`` (or anything under it) fails with EACCES, as it would for a
    user without the permission."""
    if target is None:
        yield
        return
    root = os.path.abspath(target)

    def blocked(path: object) -> bool:
        if isinstance(path, int):
            return False
        p = os.path.abspath(os.fspath(path))  # type: ignore[arg-type]
        return p == root or p.startswith(root + os.sep)

    def refuse(path: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))  # type: ignore[arg-type]

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def fake_open(file, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        return refuse(file) if blocked(file) else real_open(file, *args, **kwargs)

    def fake_os_open(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        return refuse(path) if blocked(path) else real_os_open(path, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        return refuse(path) if blocked(path) else real_mkdir(path, *args, **kwargs)

    with monkeypatch.context() as mp:  # undone when the command has run: the checks after it read freely
        mp.setattr(builtins, "open", fake_open)
        mp.setattr(io, "open", fake_open)
        mp.setattr(os, "open", fake_os_open)
        mp.setattr(os, "mkdir", fake_mkdir)
        yield


def _snapshot(path: Path) -> dict[str, tuple[bytes, int]]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input(case: Case, arts: Arts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECTOOL_DEBUG", raising=False)
    paths = {**arts, "tmp": str(tmp_path), "out": str(tmp_path / "out")}
    for name, make in case.make.items():
        paths[name] = str(make(tmp_path, arts))
    argv = case.argv.format(**paths).split()
    needle = case.needle.format(**paths)
    out = Path(case.out.format(**paths))
    before = None
    if case.existing:
        if "submit" in argv[:1]:
            out.write_text("1\t2\n")
        else:
            out.mkdir(parents=True)
            (out / "old.txt").write_text("the previous output")
        before = _snapshot(out)
    with _denied(monkeypatch, case.deny.format(**paths) if case.deny else None):
        res = CliRunner().invoke(app, argv, input=case.stdin, catch_exceptions=True)
    crash = "".join(traceback.format_exception(*res.exc_info)) if res.exc_info and not isinstance(
        res.exception, SystemExit) else ""
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2, f"exit {res.exit_code}\nstderr: {res.stderr}\n{crash}"
    assert len(lines) == 1, f"stderr is not one line:\n{res.stderr}"
    assert "Traceback" not in res.stderr
    assert lines[0].isprintable(), f"stderr holds control characters: {lines[0]!r}"
    assert len(lines[0]) < 1000, f"stderr line of {len(lines[0])} characters"
    assert needle in lines[0], f"{needle!r} not in: {lines[0]}"
    if before is None:
        assert not os.path.lexists(out), f"{out} was left behind"
    else:
        assert _snapshot(out) == before, f"the existing {out} was changed"
    if out.parent.is_dir():
        leftovers = sorted(p.name for p in out.parent.glob(f".{out.name}.tmp-*"))
        assert not leftovers, f"temp output left: {leftovers}"


def test_catalogue_covers_every_command_and_size() -> None:
    from test_docs import _commands

    names = {path for path, _ in _commands()}
    covered = {" ".join(c.argv.split()[:2]) if c.argv.split()[0] in ("tree", "hnsw", "config") else
               c.argv.split()[0] for c in CASES}
    assert names <= covered, f"commands without a bad-input case: {sorted(names - covered)}"
    assert len(CASES) >= 80 and len({c.id for c in CASES}) == len(CASES)


# ----------------------------------------------------------------------------- library checks behind the cases


def test_check_id_ranges_refuses_what_training_refuses(arts: Arts) -> None:
    """``config check`` is to run the check ``train`` runs on every batch (ids of a ``num_buckets``
    feature); the shared function finds the same id in the data, naming the file."""
    from rectool.errors import UserError
    from rectool.train.config import load_config
    from rectool.train.schema import build_input_spec, check_id_ranges

    files = sorted(str(p) for p in Path(arts["ctr"]).glob("*.parquet"))
    cfg = load_config(arts["cfg"], ["features.1.num_buckets=50"])
    spec = build_input_spec(cfg, pq.read_schema(files[0]), arts["ctr"])
    with pytest.raises(UserError, match=r"part-0\.parquet: column item_id: id \d+ is outside num_buckets=50"):
        check_id_ranges(spec, files)
    ok = build_input_spec(load_config(arts["cfg"]), pq.read_schema(files[0]), arts["ctr"])
    assert check_id_ranges(ok, files) == 400


def test_quote_cuts_and_escapes() -> None:
    from rectool.badinput import printable, quote

    assert quote("a\x00b") == "'a\\x00b'"
    assert quote("x" * 200).endswith("'...") and len(quote("x" * 200)) == 85
    assert printable("\ufeffid\x1b[31m") == "\\ufeffid\\x1b[31m"


def test_sql_values_are_bound_parameters() -> None:
    """Days and flag values reach DuckDB as parameters: ``bound`` gives a statement exactly the names it uses."""
    import datetime as dt

    import duckdb

    from rectool.ranking.common import bound, day_param

    sql = f"SELECT {day_param(dt.date(2014, 12, 18))} < $until::DATE AS before, $n + 1 AS n"
    params = bound(sql, until="2014-12-19", n=1, unused=5)
    assert params == {"day_2014_12_18": dt.date(2014, 12, 18), "until": "2014-12-19", "n": 1}
    assert duckdb.connect().execute(sql, params).fetchall() == [(True, 2)]

