"""Generation: a call planned into windows, inputs prepared, the scale-by-scale loop with guidance and bit sampling,
the pipeline over model folders, batch files, output names, and estimates of memory and FLOPs."""
