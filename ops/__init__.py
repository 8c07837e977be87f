"""Running rnnlab: the ``rnnlab`` command, the Prefect server, ``dvc repro`` under one server, the recipes.

The commands a person types, and the processes they start and stop. The flows they run live in
flows/; a module here imports Prefect only where it starts a server or serves a flow
(server.py, serve.py).
"""
