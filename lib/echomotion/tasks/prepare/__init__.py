"""Stage ``prepare``: decode, resample and store the videos
(:mod:`.run`, section :mod:`.params`)."""
