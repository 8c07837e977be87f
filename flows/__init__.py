"""Prefect flows and the command line: thin compositions of pipeline/ and models/.

Prefect's settings (its home in the project, analytics off, a generous server start-up
deadline) live in the project's prefect.toml, which Prefect reads from the working
directory; DVC's live in .dvc/config. Nothing is set here.
"""
