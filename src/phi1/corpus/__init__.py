"""Corpus ingestion: sources, cleaning filters and deduplication, as datatrove steps."""
