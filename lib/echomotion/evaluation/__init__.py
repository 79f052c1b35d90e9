"""Evaluation of synthetic echo videos: realism, motion fidelity, EF and privacy.

- :mod:`.frechet`: one Frechet distance (FID over frames, FVD over clips);
- :mod:`.extractors`: the pluggable feature extractors it compares (ReID frames, EF-regressor
  clips, or a local TorchScript Inception / I3D);
- :mod:`.ef_regressor`: the (2+1)D EF regressor, its loss and datasets;
- :mod:`.motion_fidelity`: MAFE motion-vector cosine and flow EPE against the driving video;
- :mod:`.privacy`: ReID nearest-neighbour similarity, the 95th-percentile threshold, filtering;
- :mod:`.videos` / :mod:`.synthetic`: the video sets and the synthetic dataset's table.
"""
