"""Code several task plugins share, so that no plugin imports another: composed event-library
clips and the captions written from them, the word vocabulary, mel filters, and opening the event
library. A plain package: it registers no task.
"""
