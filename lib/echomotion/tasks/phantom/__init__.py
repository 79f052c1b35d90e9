"""Stage ``phantom``: the synthetic echo phantom (:mod:`.run`, section :mod:`.params`)."""
