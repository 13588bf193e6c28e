"""tonsai: Khmer-English LLM pretraining toolkit."""
__version__ = "0.1.0"
