"""Clients of the server: the demo, the quality evaluation, the usage report, and the LSP session they share."""
