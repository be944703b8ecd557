"""The Label Studio ML backend of genpromp-annotate (method §8): `python -m backend` or `genpromp-annotate serve`."""
