"""Loading one exported program: ``NAME.pt2`` and the spec of the columns it reads.

    manifest = ExportManifest.read(export_dir)
    program, spec = load_program(export_dir, "user_tower", manifest)
    vectors = program(to_tensors(table, spec, with_label=False))
"""

from __future__ import annotations

from pathlib import Path

import torch

from rectool.errors import UserError
from rectool.programs.inputs import InputSpec
from rectool.programs.manifest import ExportManifest


def load_program(export_dir: Path, part: str = "model", manifest: ExportManifest | None = None,
                 flag: str = "--model") -> tuple[torch.nn.Module, InputSpec]:
    """The program ``part`` of an export (a one-line error if it has none) and its input spec; pass the
    ``manifest`` a caller has already read."""
    export_dir = Path(export_dir)
    manifest = manifest or ExportManifest.read(export_dir, flag)
    if not (export_dir / f"{part}.pt2").is_file():
        manifest.part(part, flag, export_dir)  # names what the export has instead
        raise UserError(f"{flag} {export_dir}: {part}.pt2 is missing; export the model again")
    spec = InputSpec.from_json((export_dir / f"{part}.input_spec.json").read_text())
    return torch.export.load(str(export_dir / f"{part}.pt2")).module(), spec
