"""Wiring: the `trackrelay` command and the app that starts the relay's parts. Nothing in relay/ or admin/ imports it."""
