"""Training data: manifests, media preprocessing, captions, buckets, datasets, the latent cache and its extraction."""
