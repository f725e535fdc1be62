"""Input pipeline: sources, image and text views, tokenizers, tf.data assembly."""
