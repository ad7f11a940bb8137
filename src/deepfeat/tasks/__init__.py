"""Tasks built on the library: systems of the thesis (captioning, ...) as jobs."""
