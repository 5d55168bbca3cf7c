"""Training with Lightning: the LightningModule, the DataModule and its data, callbacks, loggers, the trainer CLI."""
