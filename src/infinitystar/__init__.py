"""InfinityStar: unified spacetime autoregressive image and video generation."""

__version__ = "0.1.0"
