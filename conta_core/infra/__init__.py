"""Infrastructure every step shares: config schema checks (config), the run layout of every
artifact path (layout), atomic file I/O (fileio), the one model-file format (checkpoint),
devices and GPU locks (device), the one resumable training loop (training), sharding of
image ids (shards), the Snakemake script adapter (script) and progress logging (progress).
"""
