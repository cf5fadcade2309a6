"""GBI language model: the source corpus as the task latent (Hummos et al. 2024, Sec. 3.3)."""
