"""Stages of the flow group: ``flow_train`` (:func:`.train.train_flow`, unsupervised
PWCLite) and ``flow_export`` (:func:`.export.export_flow`, mid->ED / mid->ES pseudo flow
of every triplet video and the EPE of every provider against the phantom's truth).

Only the params sections are imported here (``echomotion.params`` imports this package
to validate params.yaml); the stage code lives in the submodules ``train``, ``export``,
``pairs`` (the training dataset) and ``truth`` (ground truth and EPE tables).
"""
