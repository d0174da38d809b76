"""Text to batches: tokenizers (`tokenizer`), corpora and their cache (`corpus`), dataset recipes
(`presets`), text cleaning (`text`), finding a corpus on disk (`locate`) and length-grouped batches
(`batches`). Mirrors the config groups `data/` and `tokenizer/`.

May import: vae_text.core, vae_text.config.
"""
