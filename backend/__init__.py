"""The Label Studio ML backend of genpromp-annotate (method §8): `python -m genpromp_annotate_backend` or `genpromp-annotate serve`."""
