"""Typer command-line interface for reclmis. Thin: parse, build config, call one core function, render."""
