"""Connectors: one module per protocol, each registering under its config `type:` name."""
