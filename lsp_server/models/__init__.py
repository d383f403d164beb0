"""Model cards, GGUF metadata, memory fit and the `tandem models` command."""
