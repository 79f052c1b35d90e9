"""Stage ``transfer_oracle``: the motion measures' ceiling on exact transfers (:mod:`.run`)."""
