"""The Label Studio ML backend of genpromp-annotate (SPEC §8): `python -m backend` or `genpromp-annotate serve`."""
