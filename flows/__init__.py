"""Prefect flows: thin compositions of pipeline/ and models/ (the command line that runs them is ops/).

Prefect's settings (its home in the project, analytics off, a generous server start-up
deadline) live in the project's prefect.toml, which Prefect reads from the working
directory; DVC's live in .dvc/config. Nothing is set here.
"""
