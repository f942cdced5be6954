"""Executors: the LocalExecutor whose workers start with the task runner and the SDKs already imported."""

from edge_training.executors.local_preloading import PreloadingLocalExecutor

__all__ = ["PreloadingLocalExecutor"]
