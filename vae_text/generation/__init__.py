"""What is judged of a trained model's sentences and latent space: the generation suite
(`suite`: samples, diversity, forward / reverse perplexity) and the latent probes
(`probes`). Both take a trained model as `vae_text.pipeline` gives it.

May import: everything but the entry points.
"""
