"""Training: stage 1 (base video model) and stage 2 (sync layers) on synthetic 4D scenes."""
