"""Training the transformer: its recipe, batch preparation, the module as trained, the loss, scale subsets,
sequence parallelism and the trainer loop."""
