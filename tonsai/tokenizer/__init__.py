"""Shared Khmer-English BPE: training, loading with checks, tokenize-and-pack."""
