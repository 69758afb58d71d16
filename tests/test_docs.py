"""The README, the code and CI agree."""

from __future__ import annotations

import re
from pathlib import Path

from flask_fennec_cache.config import CONFIG_KEYS, markdown_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_config_table_is_the_code_table() -> None:
    assert markdown_table() in README, (
        "README.md's configuration table is out of date: paste "
        "flask_fennec_cache.config.markdown_table() into it"
    )


def test_every_config_key_is_prefixed_and_documented() -> None:
    for key in CONFIG_KEYS:
        assert key.name.startswith("FENNEC_CACHE_")
        assert key.description.strip()


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    test_command = next(c for c in commands if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command.split("&&")[-1].strip() in ci
    assert "redis-server" in ci


def test_every_linked_doc_exists() -> None:
    for target in re.findall(r"\]\(((?:docs/|bench/)?[\w./-]+\.md)\)", README):
        assert (ROOT / target).is_file(), f"README links to missing {target}"
