"""Runtime backends: one module per runtime over the small protocol in ``base``."""
