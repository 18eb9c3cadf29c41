"""conta_core: the library behind the CONTA weakly-supervised segmentation pipeline.

All logic lives here; `workflow_scripts/` are thin command-line wrappers that the
Snakemake rules call. Every module is importable and testable without Snakemake.
"""

__version__ = "0.1.0"
