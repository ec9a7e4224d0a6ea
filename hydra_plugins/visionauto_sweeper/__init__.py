"""visionauto's Hydra sweeper (``hydra/sweeper=visionauto``): async Optuna sweeps with pruning."""
