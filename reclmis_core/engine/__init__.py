"""Training engine: objective (losses), trainer, checkpoints, evaluator."""
