"""Benchmarks of flask-fennec-cache against raw redis-py, Flask-Caching and dogpile.cache.

Run ``python -m bench`` from the repository root (``--quick`` for a smoke run, ``--json PATH`` to
keep every number). The bench starts its own ``redis-server`` on a free loopback port and never
touches any other Redis. The peers come from the ``bench`` extra:
``pip install -e '.[bench]'``.
"""
