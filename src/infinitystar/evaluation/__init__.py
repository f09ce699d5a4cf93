"""Evaluation: world prompt sets, finding and reading outputs, per-item scores (flicker, smoothness, prompt
following, CLIP), FVD, and the summary report."""
