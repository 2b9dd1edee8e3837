"""gan-lab: a config-driven command-line lab for training and comparing GAN losses."""

__version__ = "0.1.0"
