"""Training: config, launcher environment, Trainer callbacks, the train stage."""
