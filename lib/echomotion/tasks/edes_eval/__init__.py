"""Stage ``edes_eval``: the label-free ED/ES detector against the phantom's truth (:mod:`.run`)."""
