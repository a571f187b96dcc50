"""lrbench's Hydra sweeper for studies (`hydra/sweeper=study`); Hydra finds plugins only in this package."""
