"""Rosetta's HTTP side: the app, config, routing, the request pipeline, metrics and logs."""

__version__ = "0.1.0"
