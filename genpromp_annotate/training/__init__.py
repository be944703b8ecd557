"""Training: stage 1 learns one concept token per category, stage 2 optionally finetunes the UNet (method §5)."""
