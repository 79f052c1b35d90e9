"""MAFE: motion-appearance feature extractor (EMA-VFI-style inter-frame attention).

``MAFE`` interpolates the middle frame of an ED/ES pair and exposes per-pair motion and
appearance vectors; ``mafe_loss`` trains it on pseudo flow and ReID labels; ``augment_batch``
flips, rotates and time-swaps a batch with its labels transformed consistently.
"""
