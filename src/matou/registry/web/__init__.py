"""Web pages: repositories the viewer may see, a search box, and one page per repository (jinja2)."""
