"""InfluencerFormer: matching-free training of query-based segmentation models.

The package imports with torch, numpy and scipy only; framework adapters live in ``projects/``.
"""
__version__ = "0.4.0"
