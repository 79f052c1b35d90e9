"""Stage ``reid_export``: pseudo appearance labels and held-out retrieval
(:mod:`.run`, section :mod:`.params`)."""
