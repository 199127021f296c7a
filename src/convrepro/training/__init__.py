"""The one LightningModule the three papers share, the papers' optimizers and callbacks."""
