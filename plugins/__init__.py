"""First-party task plugins (seld, enhance, bwe, caption, tta)."""
