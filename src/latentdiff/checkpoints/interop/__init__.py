"""Checkpoints of other toolkits: published CompVis latent-diffusion / Stable Diffusion files
(`compvis.py`) and diffusers pipeline folders (`diffusers_folder.py`), read without executing
pickled code (`files.py`); `checkpoints.load_model` reads any of them."""
