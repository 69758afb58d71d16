"""``python -m demo``: the demo on Flask's development server at http://127.0.0.1:8000."""

from __future__ import annotations

from demo.app import create_app


def main() -> None:
    """Run the development server (threaded); use gunicorn for anything else."""
    create_app().run(host="127.0.0.1", port=8000)


if __name__ == "__main__":
    main()
