"""Sentiment classification's data: the ``imdb_data`` stage (IMDB reviews, also read by lmclass)."""
