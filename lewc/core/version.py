"""lewc's version, recorded in every checkpoint sidecar and results file (``lewc.__version__`` re-exports it).

It lives in core so that the layers that record it (training, pipeline) and ``--version`` (core.logs,
the ``lewc`` dispatcher) need not import the top-level package; keep it equal to pyproject.toml's.
"""

__version__ = "0.1.0"
