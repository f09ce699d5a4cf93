"""The procedural world of the built-in model: scenes, captions, rendering, datasets, and the analytic evaluator
that reads colour, shape and motion back from frames."""
