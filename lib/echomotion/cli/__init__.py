"""Command-line tools: ``generate`` (one video from a driving and an appearance video),
``preset`` (params.yaml at the paper's or a smoke-test scale) and ``launch`` (a training
stage on one or several processes). They import the library, never a task.
"""
