"""Publishing: model cards and pushes to the Hugging Face Hub (scripts/push_to_hub.py, train_gpt2.py --push-to-hub)."""
