"""Jinja2 templates shipped as package data (report.html.j2)."""
