"""One trial: train, evaluate and package one model from a resolved config (no Hydra)."""
