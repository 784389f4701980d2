"""Building blocks shared by the autoencoder and the UNet."""
