"""Tasks built on the library: systems of the thesis (captioning, video, detection, ...) as jobs."""
