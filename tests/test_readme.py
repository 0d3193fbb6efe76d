"""The README's promises: CI runs its test command verbatim, and its first command really works."""

from __future__ import annotations

import re
import shlex

from conftest import REPO, run_cli


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Set-up: two commands.*?```bash\n(.*?)```", text, re.S)
    assert block, "README lost its set-up block"
    return [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]


def test_ci_runs_the_readme_test_command_verbatim():
    commands = readme_commands()
    assert len(commands) == 2
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands[1] in ci


def test_readme_has_no_placeholders_left():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert not re.findall(r"^[A-Z_]+_OUTPUT$|^BENCH$|^MODEL_CARD$", text, re.M)


def test_the_first_readme_command_indexes_and_finds_the_answer(tmp_path):
    """Command 1 minus the install (this process already has it): index the package, search it."""
    steps = [shlex.split(part.strip()) for part in readme_commands()[0].split("&&")]
    edge = [s for s in steps if s[0].endswith("/edge-dse")]
    assert [s[1] for s in edge] == ["index", "search"]
    env = {"EDGE_DSE_HOME": str(tmp_path / "home")}
    indexed = run_cli(*edge[0][1:], env=env, cwd=REPO)
    assert indexed.returncode == 0, indexed.stderr
    found = run_cli(*edge[1][1:], env=env, cwd=REPO)
    assert found.returncode == 0, found.stderr
    # The query asks how a crash is survived: the answer lives in the store's HNSW module.
    top3 = [line.split()[2] for line in found.stdout.splitlines()[:3]]
    assert any("store/" in p for p in top3), found.stdout
