"""The spacetime autoregressive transformer: layers, attention pattern and KV cache, the model, how inference runs
its blocks, and its weight formats (released shards, trained-model folders)."""
