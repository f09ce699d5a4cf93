"""The causal video VAE: its layers, the model, and its weight formats (the original key layout, VAE folders)."""
