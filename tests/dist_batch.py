"""Train several configs, one after the other, inside ONE torchrun job and one process group.

The tests run it as ``python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_batch.py
CONFIG.yaml ...``: every config trains under DDP on 2 ranks with the trainer ``rectool train`` runs,
while the launch and imports (most of a two-process test's time) are paid once.
"""

from __future__ import annotations

import sys

import torch.distributed as dist

from rectool.train import distributed
from rectool.train.config import load_config
from rectool.train.trainer import train

if __name__ == "__main__":
    # one group for every training (setup reuses it): a group destroyed and made again under torchrun's
    # agent store can desynchronise the ranks' barriers
    distributed.teardown = lambda: None
    for path in sys.argv[1:]:
        train(load_config(path), device="cpu")
    dist.destroy_process_group()
