"""echomotion: label-free motion-conditioned diffusion for synthetic echocardiography."""

__version__ = "0.1.0"
