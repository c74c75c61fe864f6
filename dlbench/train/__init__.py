"""The building blocks of a plugin run, for training: the LightningCLI wiring, callbacks, logger, metrics."""
