"""Flax linen models: image and text towers, DeCLIP heads, and the two-tower model."""
