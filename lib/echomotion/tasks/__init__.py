"""Stage logic: one module per group of stages, each with its params sections.

A stage script in ``stages/`` reads the validated params and calls one function here.
"""
