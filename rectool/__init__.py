"""rectool: a recommender-systems toolkit from raw behaviour logs to a result.

Every pipeline stage is an importable function (``rectool.ingest.convert.convert``,
...); the ``rectool`` command line is a thin layer over them.
"""

__version__ = "0.1.0"
