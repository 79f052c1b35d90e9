"""echomotion: label-free motion-conditioned diffusion for synthetic echocardiography."""
