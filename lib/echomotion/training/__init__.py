"""The one training loop every model of the project trains with.

``train(model, dataset, loss_fn, params, out_dir=..., seed=...)`` runs AdamW (or Adam) on
HF accelerate (CUDA when present, else CPU; DDP across the processes of ``torchrun`` or
``accelerate launch --multi_gpu``), with a linear warm-up then a constant, cosine or linear
learning rate (down to ``lr_min`` over ``schedule_steps``), gradient accumulation,
gradient clipping, bf16/fp16 autocast (fp16 only on CUDA), an EMA of the weights, the
best-eval weights when ``best_metric`` is set, a TSV training curve and a tqdm bar on rank 0.
``loss_fn(model, batch) -> (loss, logs)`` is the only model-specific piece.

``batch_size`` is per process and micro-batch: one optimizer step sees
``batch_size * grad_accum * world_size`` items. Rank ``r`` draws its own shard of
every epoch; the data order depends only on the seed, the world size and how many
batches were drawn (see :mod:`echomotion.training.data`).

Files (only rank 0 writes; all ranks read checkpoints, so they share a file system)::

    out_dir/
      checkpoints/               # `persist: true` in dvc.yaml
        step-0000100/            # after 100 optimizer steps
          model/                 # save_pretrained (diffusers ModelMixin) or model.safetensors
          ema.safetensors        # EMA weights, keyed like the parameters (with ema_decay)
          training_state.json    # step, data position, run config, optimizer, LR schedule,
                                 # grad scaler and every rank's python/numpy/torch RNG states
        step-0000200/
        best-0000100/            # with best_metric: the best eval's model/ (+ model_raw/
                                 # with EMA); the checkpoint state records which is best
      model/                     # final weights to use: the EMA when enabled; with
                                 # best_metric, those of the best eval
      model_raw/                 # final raw weights, only with EMA
    log_file (default out_dir/train.tsv): step, loss, loss_fn logs, grad_norm, lr
    eval.tsv beside it: step and eval_fn metrics, when an eval_fn is given

``training_state.json`` (structure and primitives) and ``training_state.safetensors``
(its tensors) are written with deterministic bytes and read without unpickling anything.

Checkpoints and resume:

- A checkpoint is saved every ``checkpoint_every`` steps and after the last step. It is
  written to ``checkpoints/.tmp-step-XXXXXXX`` and renamed when complete, so only
  ``step-<digits>`` folders are complete; ``.tmp-*`` leftovers of an interrupted save
  are deleted by the next run. The newest ``keep_checkpoints`` are kept.
- ``train()`` continues from the newest complete checkpoint in ``out_dir/checkpoints``:
  weights, EMA, optimizer, schedule, grad scaler, the RNG states of every rank and the
  data position are restored, so a run interrupted at any point and started again ends
  with the same weights, bit for bit, as one never interrupted (same world size and
  hardware; steps after the last checkpoint are redone). The TSV rows written after
  the checkpoint's step are dropped. The first row after a resume averages fewer steps
  unless ``checkpoint_every`` is a multiple of ``log_every``.
- Calling ``train()`` again after a finished run does no step and rewrites ``model/``;
  raising ``steps`` continues the run (a cosine schedule then stretches to the new end).
- A checkpoint whose run configuration differs (any param but ``steps``,
  ``checkpoint_every``, ``keep_checkpoints``, ``log_every``, ``num_workers``; the seed,
  model class and config, or dataset length) belongs to another run: it is deleted with
  a warning and training starts from step 0.
- Resuming on another number of processes works but is not exact (a warning says so).
"""
