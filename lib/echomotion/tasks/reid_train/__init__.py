"""Stage ``reid_train``: the ReID appearance encoder (:mod:`.run`, section :mod:`.params`)."""
