"""Training: data manifests, the latent cache, the transformer trainer and tokenizer training."""
