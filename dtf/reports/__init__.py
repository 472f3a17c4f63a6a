"""Run reports: one RunReport per run id, rendered as HTML, Markdown, JSON or JUnit XML."""
