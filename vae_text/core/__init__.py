"""Foundations with no text or model concept: the error types (`errors`), files, devices, RNG
state and the CLI wrapper (`utils`), and the data-parallel process group (`distributed`).

May import: nothing of vae_text.
"""
