"""The escape corpus: see conftest.py and docs/security.md."""
