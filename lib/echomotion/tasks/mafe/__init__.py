"""Stages of the mafe group: train MAFE, then export its motion and appearance vectors.

``mafe_train`` trains :class:`~echomotion.mafe.MAFE` on each TRAIN video's ED/mid/ES
triplet, supervised by frame interpolation plus the pseudo flow (L_flow) and ReID
(L_reid) labels, and scores it on VAL against naive interpolation baselines and, on the
phantom, ground-truth flow. ``features`` stores every triplet video's motion and
appearance vectors and measures what each encodes (EF by ridge regression, identity by
retrieval).
"""
