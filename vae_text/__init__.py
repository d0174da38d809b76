"""vae_text: sentence-level variational autoencoders for text."""

__version__ = "0.1.0"
