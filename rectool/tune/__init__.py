"""``rectool tune``: configurations chosen on a validation split carved from train, never on test.

    space.py    the search as YAML: methods, parameter domains, sampler, budget, patience
    holdout.py  the validation split: the last share of time-ordered lists, a seeded random share
                of item sets, or given held-out pairs
    study.py    the Optuna study, its trials table and plot, the chosen configuration, and the
                winner fitted on the whole train
"""

from rectool.retrieval.choices import Holdout  # tune --holdout (light: the command line reads it)

__all__ = ["Holdout"]
