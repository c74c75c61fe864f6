"""The plugin contract and discovery: specs, registry, errors, shared names. No torch."""
