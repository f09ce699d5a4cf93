"""The networks and their weight formats: configs and presets, 4-axis RoPE, the bitwise spherical quantizer, the
causal video VAE (``vae/``) and the spacetime autoregressive transformer (``transformer/``)."""
