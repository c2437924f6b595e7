"""The ranking pipeline (Tianchi next-day purchase task, scored by F1).

``features`` (DuckDB feature tables per cut-off day) -> ``dataset`` (candidates, labels,
features joined; train/eval/predict) -> ``baseline`` (rule scores in the prediction
schema) -> ``eval_f1`` (top-K x threshold scan) -> ``submit`` (the submission file).
"""
