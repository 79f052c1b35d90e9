"""Stage ``sample``: the synthetic EchoNet-Dynamic dataset and its previews
(:mod:`.run`, section :mod:`.params`)."""
