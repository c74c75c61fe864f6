"""Commands built on trained runs and plugins: sweep, export, compress, new-plugin."""
