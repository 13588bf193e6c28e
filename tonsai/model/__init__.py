"""Model configs, building, and parameter counting."""
