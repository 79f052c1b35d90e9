"""Stage ``flow_export``: pseudo flow labels and the EPE of every provider
(:mod:`.run`, section :mod:`.params`)."""
