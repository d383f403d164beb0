"""tandem: local inline completions and cloud-assisted commands over LSP."""

__version__ = "0.1.0"
