"""The stores between stages: one module per store, the only code that knows its layout.

Each module holds its store's default location in the pipeline (``PATH``, the path
dvc.yaml names), its ``SCHEMA`` (what every array and table column means; also written
into the store's attributes) and the code that writes and reads it. :mod:`.ragged` is the
sharded Zarr container they are all built on (variable-length videos, one table row per
entry, memory-mapped reads).

========================  ===============  ==========================================
module                    written by       read by
========================  ===============  ==========================================
:mod:`.phantom_truth`     phantom          edes_eval, flow_train/export, mafe_train
:mod:`.videos`            prepare          every later stage
:mod:`.pseudo_flow`       flow_export      mafe_train
:mod:`.pseudo_reid`       reid_export      mafe_train
:mod:`.features`          features         mcdm_train, sample, evaluate, transfer_oracle
:mod:`.latents`           latents          mcdm_train
========================  ===============  ==========================================
"""
