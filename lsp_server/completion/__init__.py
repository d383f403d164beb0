"""Inline completion: request queue, prompt building, post-processing."""
