"""Quality filtering (paper section 2.1): annotate, embed, classifier, filter."""
