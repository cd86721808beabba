"""Run a repository of Jupyter notebooks as one pipeline.

Importing this package stays light: Azure SDKs, papermill and nbclient are imported only by the modules
that need them (DESIGN 2).
"""

__version__ = "0.1.0"
