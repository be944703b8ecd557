"""Plain-torch inference modules that load diffusers-layout checkpoints without importing diffusers or transformers."""
