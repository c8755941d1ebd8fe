"""Ranking and re-ranking, one path for the CLI and the web page."""
