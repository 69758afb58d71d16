"""Flask-Caching 2.5.1's own tests, run against flask_fennec_cache.compat (see conftest.py)."""
