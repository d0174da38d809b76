"""The Hydra configs, shipped inside the wheel as the package `vae_text.conf`.

Entry points read them as `pkg://vae_text.conf` (see `vae_text.core.utils.CONFIG_PATH`); Hydra's package
config source needs this file to recognise the folder as a package. Tests compose straight from this
folder with `initialize_config_dir`.
"""
