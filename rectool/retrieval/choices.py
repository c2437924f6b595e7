"""The closed choices of the retrieval commands, one definition each.

The library types its arguments with them; the CLI turns each into a Typer choice
(``rectool.cli.options.choices``). No heavy imports here: every command line reads this.
"""

from typing import Literal

Method = Literal["hnsw", "brute", "tdm", "nann"]   # retrieve --method
Space = Literal["ip", "l2", "cosine"]              # hnsw build --space
MissingUsers = Literal["error", "zero"]            # eval-topk --missing-users
Holdout = Literal["last", "random", "table"]    # tune --holdout: how the validation split is carved from train
