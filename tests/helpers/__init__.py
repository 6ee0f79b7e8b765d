"""Test helpers shared across test folders (import as ``helpers.<module>``:
pytest puts ``tests/`` on sys.path because ``tests/conftest.py`` lives there)."""
