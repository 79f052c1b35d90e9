"""Stage ``features``: motion and appearance vectors and what they encode
(:mod:`.run`, section :mod:`.params`)."""
