"""LM-based classification's data: the ``lmclass_data`` stage (one windows dataset per class)."""
