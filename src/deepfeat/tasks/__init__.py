"""Tasks built on the library: each a job with typed options, a run function and a thin CLI group."""
