"""`python -m genpromp_annotate …` (what `accelerate launch -m genpromp_annotate` runs)."""

from genpromp_annotate.cli import main

if __name__ == "__main__":
    main()
