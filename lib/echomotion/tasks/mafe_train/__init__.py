"""Stage ``mafe_train``: the motion-appearance feature extractor
(:mod:`.run`, section :mod:`.params`)."""
