"""Text conditioning: prompt checks and decoration, text encoders (T5, the built-in one), the optional prompt
rewriter, and loading an encoder from a folder."""
