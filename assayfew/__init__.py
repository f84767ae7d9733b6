"""assayfew: few-shot assay activity prediction with meta-learned models."""

__version__ = "0.1.0"
