"""Run a repository of Jupyter notebooks as one pipeline.

Importing this package stays light: Azure SDKs, papermill and nbclient are imported only by the modules
that need them (docs/architecture.md#parts-and-data-flow).
"""

__version__ = "0.1.0"
