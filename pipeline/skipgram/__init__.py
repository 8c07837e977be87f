"""Skip-gram's data: the training pairs of one pass over the word streams."""
