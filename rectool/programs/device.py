"""Where an exported program runs: the CPU, or a CUDA device with inputs and outputs moved for it.

Inputs are built on the CPU from Arrow data and outputs come back to the CPU, where numpy,
Arrow and the numba kernels read them; on the CPU the program runs as it is.

    device = device_here("auto")         # cuda:LOCAL_RANK when a GPU is present, else cpu
    program = program_on(program, device)
"""

from __future__ import annotations

import os

import torch

from rectool.programs import DeviceChoice


def resolve_device(choice: DeviceChoice, local_rank: int) -> torch.device:
    """``auto`` is CUDA when a GPU is present; each local rank takes its own GPU."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return torch.device(choice)


class OnDevice(torch.nn.Module):
    """An exported program run on ``device``: inputs (built on the CPU from Arrow data) go there, outputs
    come back to the CPU, where numpy, Arrow and the numba kernels read them."""

    def __init__(self, program: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.program, self.device = program.to(device), device

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        moved = {k: v.to(self.device, non_blocking=True) for k, v in x.items()}
        return self.program(moved).cpu()


def program_on(program: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``program`` itself on the CPU, else wrapped to run on ``device`` (``OnDevice``)."""
    return program if device.type == "cpu" else OnDevice(program, device)


def device_here(choice: DeviceChoice) -> torch.device:
    """``resolve_device`` for this process: its ``LOCAL_RANK`` under a launched job, else 0."""
    return resolve_device(choice, int(os.environ.get("LOCAL_RANK", "0")))
