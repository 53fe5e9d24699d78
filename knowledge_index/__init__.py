"""Knowledge bases: loading and validating them, encoding text, and the vector index."""
