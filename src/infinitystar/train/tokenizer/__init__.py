"""Training the tokenizer (the VAE with its bitwise quantizer): recipe, clip sources, setup, the straight-through
quantizer pyramid, losses (perceptual, GAN) and the trainer."""
