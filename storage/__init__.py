"""Versioned, content-addressed storage for layerboot runs.

Plain Python + pyarrow + fsspec: never imports prefect or torch, so dashboards and
operator tools can read a workdir without the training stack.
"""
