"""Stage ``evaluate``: score the synthetic dataset (see :mod:`.run`)."""
