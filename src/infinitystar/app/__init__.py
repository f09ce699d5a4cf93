"""The web demo (``infinitystar serve``): input checks, generation handlers, and the gradio page."""
