"""Foundations with no text or model concept: the error types (`errors`), files, devices, RNG
state and the CLI wrapper (`utils`), the data-parallel process group (`distributed`), the user's
plugins (`plugins`), what every registry shares (`registry`) and a part's options, declared by
its `__init__` and checked against a config's values (`options`).

May import: nothing of vae_text.
"""
