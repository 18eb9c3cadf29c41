"""Scoring against ground truth: metrics (VOC confusion / mIoU), evaluate (label-map
artifacts), confounding (pair confusion, background leak, part misses, boundary F) and
context_diagnostics (does the context carry signal).
"""
