"""ReID appearance network (identity = video): model, losses, P x K sampler, metrics."""
