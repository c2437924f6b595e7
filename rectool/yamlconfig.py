"""YAML files checked by a pydantic model, and what is wrong with them as one line.

Inputs: the path of a YAML file a user wrote (a training config, a ``convert --schema`` spec)
and the pydantic model class its tree must fit. Outputs: the parsed tree (``read_yaml``), or
the one-line message of a ``UserError`` naming the file, the key path and what is wrong
(``validation_message``)::

    x.yaml: not valid YAML (while parsing a flow sequence in "<unicode string>", line 1, ...)
    x.yaml: train.epoch: unknown key (did you mean 'epochs'?); allowed: best_metric, best_mode, ...
    x.yaml: optimizer.dense.type: got 'adamax'; input should be 'adam', 'adamw' or 'sgd'
    x.yaml: model: 'type' 'fm' is unknown; choose one of 'wide_and_deep', 'deepfm', ...
    x.yaml: train: required key is missing
    x.yaml: feature names must be unique (repeated: user_id)    (a check across sections names its keys)

Pydantic's union tags (``IdFeature``) are left out of the key path; ``label`` goes before it
(``"field "``: ``spec.yaml: field columns.0.type: got 'int46'; ...``).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from rectool.badinput import QUOTE_LIMIT, printable, quote
from rectool.errors import UserError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path) -> Any:
    """The YAML tree of ``path`` (None for an empty file); a syntax error is a one-line ``UserError``."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc


def read_yaml_file(path: Path, flag: str) -> Any:
    """The YAML tree of the file a flag names (``--config``, ``--space``, ``--schema``): a missing file or a
    syntax error is a one-line ``UserError``."""
    if not path.is_file():
        raise UserError(f"{flag} {path}: no such file")
    return read_yaml(path)


def validate_file(path: Path, tree: Any, root: type[M], label: str = "") -> M:
    """``tree`` (read from ``path``) as a ``root``; what does not fit is one line (``validation_message``)."""
    try:
        return root.model_validate(tree)
    except ValidationError as exc:
        raise UserError(validation_message(path, exc, root, label)) from exc


def validation_message(path: Path, exc: ValidationError, root: type[BaseModel], label: str = "") -> str:
    """The first error of ``exc`` (from validating ``path``'s tree as ``root``) as one line."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    # drop pydantic's union tags (e.g. "IdFeature") from the path
    loc = [p for p in loc if not p[:1].isupper() and p not in ("function-after",)]
    where = ".".join(loc) or "(top level)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
        parent = model_at(root, loc[:-1])
        if parent is not None:
            allowed = sorted(parent.model_fields)
            hint = difflib.get_close_matches(loc[-1], allowed, n=1)
            msg += (f" (did you mean '{hint[0]}'?)" if hint else "") + f"; allowed: {', '.join(allowed)}"
    elif err["type"] == "literal_error":
        value = err.get("input")
        shown = quote(value) if isinstance(value, str) else printable(repr(value), QUOTE_LIMIT)
        msg = f"got {shown}; {msg[0].lower() + msg[1:]}"
    elif err["type"] == "union_tag_invalid":
        ctx = err.get("ctx", {})
        msg = (f"{ctx.get('discriminator', 'type')} {ctx.get('tag')!r} is unknown; "
               f"choose one of {ctx.get('expected_tags')}")
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif err["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
        if not loc:  # a check across sections names its own key
            return f"{path}: {msg}"
    return f"{path}: {label}{where}: {msg}"


def model_at(root: type[BaseModel], loc: Sequence[str]) -> type[BaseModel] | None:
    """The pydantic model class at a key path under ``root`` (for listing allowed keys)."""
    model: Any = root
    for part in loc:
        if part.isdigit() or model is None:
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None:
            return None
    return model if isinstance(model, type) else None
