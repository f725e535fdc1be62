"""Weights in and out: OpenAI CLIP / open_clip checkpoints (optional extra: requirements-interop.txt)."""
