"""Evaluation: per-language perplexity and bits per byte, reports."""
