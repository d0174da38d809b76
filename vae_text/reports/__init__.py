"""Pictures of runs and of latent spaces (`figures`, `viz`), used by `vae_text.report` and the
notebook.

May import: vae_text.core, vae_text.config, vae_text.model.
"""
