"""Stages of the reid group: train the appearance encoder, export its pseudo labels.

``reid_train`` trains :class:`~echomotion.reid.ReIDEncoder` with identity = TRAIN video
on frames at every cardiac phase, so the embedding keeps what a video looks like and
drops where in the cycle it is. ``reid_export`` writes the embeddings of each triplet
video's ED and ES frames (the pseudo appearance labels MAFE learns from) and scores
retrieval on held-out videos against an untrained encoder and raw pixels.
"""
