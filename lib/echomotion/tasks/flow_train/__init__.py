"""Stage ``flow_train``: the unsupervised PWC-Lite flow network
(:mod:`.run`, section :mod:`.params`)."""
