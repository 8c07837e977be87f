"""OCR sequence labelling's data: the ``ocr_data`` stage and the table reader the labeller uses."""
