"""`python -m vae_text`: the commands this package installs, and what each does."""

from __future__ import annotations

COMMANDS = [  # (console script, module, what it does)
    ("vae-text-train", "vae_text.train", "train a model, evaluate it on test, save checkpoints"),
    ("vae-text-eval", "vae_text.evaluate", "evaluate a checkpoint on a split (IW-NLL, MI, AU, ...)"),
    ("vae-text-sample", "vae_text.sample", "sample, reconstruct or interpolate sentences"),
    ("vae-text-report", "vae_text.report", "tabulate and plot finished runs or a sweep"),
]


def main() -> None:
    print("vae_text commands (each also runs as `python -m <module>`):")
    for script, module, what in COMMANDS:
        print(f"  {script:<16} {module:<18} {what}")
    print("Hydra commands take overrides, e.g. vae-text-train +experiment=smoke; --help lists them.")


if __name__ == "__main__":
    main()
