"""What a user reads: per-round summary tables (summary), figures (plots, visualize),
`conta inspect` (inspection) and content digests of a run (run_digest).
"""
