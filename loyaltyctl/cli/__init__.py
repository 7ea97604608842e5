"""Typer apps, one module per command group. They parse, call one service, render.

Nothing here imports SQLAlchemy, SQLModel or pydantic at module level, so ``--help``
stays fast: services are imported inside the command functions.
"""
