"""Data helpers shared by plugins: in-memory batching, downloads and parsers of standard formats."""
