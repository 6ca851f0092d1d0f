"""The training loop and its pure jitted steps: TrainState, train and eval steps, the optimizer,
metrics and FLOP accounting."""
