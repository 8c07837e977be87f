"""Data stages of rnnlab: corpora → document table → tokens → vocabulary → windows.

Nothing in this package imports torch or prefect; models/ and flows/ build on it.
"""
