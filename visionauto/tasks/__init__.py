"""One LightningModule per task family (shared step, losses, metrics)."""
