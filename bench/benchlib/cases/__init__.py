"""One module per benchmark case; each exposes ``run(ctx) -> dict``."""
