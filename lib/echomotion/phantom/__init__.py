"""Synthetic echo phantom: the project's embedded default dataset.

``generate_phantom`` writes an EchoNet-Dynamic-layout dataset of apical four-chamber
B-mode videos (moving speckle inside a fan, four chambers, LV contraction matching
each video's EF) and a ground-truth store (backward displacements, chamber labels,
contraction phase, LV volume); ``flow_between`` turns two stored displacements into
the ground-truth optical flow between those frames.

Modules: identity (per-video random choices), anatomy (chambers in the reference, ED,
configuration), motion (contraction, displacement fields, flow), render (B-mode
image), tracings (EchoNet tracings, method of disks), simulate (one video), writer
(files on disk), transfer (one video's anatomy moving as another's does: an exact
motion transfer).
"""
