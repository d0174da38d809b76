"""The model and its parts, mirroring the config group `model/`: the latent families
(`latent/`: posteriors and priors), `encoders/`, `decoders/`, the attention blocks they share
(`attention`), the per-sentence NLL (`nll`), the assembled `TextVAE` (`textvae`) and decoding
strategies over the decoder protocol (`decoding`).

May import: vae_text.core, vae_text.config, vae_text.data.
"""
