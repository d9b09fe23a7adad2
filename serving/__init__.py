"""serving: the model at run time.

Loads the configured base model (GGUF, safetensors directory or Hugging Face id),
applies its chat template, generates and streams replies, and (issue 3) batches
requests and hot-swaps LoRA adapters. It knows nothing about Slack, Discord, the
learning loop or the database schema: ``bot`` and ``learning`` import it, never the
other way round.
"""
