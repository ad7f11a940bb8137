"""The reliability catalogue (issue 14): one test per hostile trial of the library, each on small
generated data and quick; the kill-at-every-step trial runs a driver in a subprocess.

- test_checkpoints.py: nothing pickled ever runs (resume, --weights, --after, --checkpoints go
  through deepfeat.checkpoint); one-line messages for text, raw, malicious and truncated files
- test_store_damage.py: a damaged entry is found on open, repaired by extract, refused by
  load_features; missing or broken meta.json; NaN rows and the validity mask
- test_kill_every_step.py: SIGKILL at every rename and write of a run, then resume
- test_inputs.py: file names that are not UTF-8, Latin-1 manifests, duplicate and aliased paths,
  commas in CSV labels, link loops and empty folders, max_pixels past Pillow's limit,
  on_error='fail' keeping the images before the bad one
"""
