"""The set-up users rely on: pyproject and environment.yml agree, the README's two commands
are the ones CI runs."""
import pathlib
import re
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pyproject_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs |= set(extra)
    return reqs


def test_environment_yml_lists_the_same_requirements_as_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) == pyproject_requirements()


def readme_commands():
    """The README's set-up block: the demo command, then the test command."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_gives_two_commands_demo_and_tests():
    demo, tests = readme_commands()
    assert demo.endswith("tpuinfer demo")
    assert 'pip install -e ".[dev]"' in tests


def test_ci_runs_exactly_the_readme_test_command():
    _, tests = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert f'README_TEST_COMMAND=\'{tests}\'' in ci


def test_every_package_of_the_tree_is_installed():
    """A package left out of pyproject's list is missing from every non-editable install (the
    command line's wing, `tpuinfer/cli/`, is one)."""
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    tree = {".".join(p.parent.relative_to(ROOT).parts)
            for p in (ROOT / "tpuinfer").rglob("__init__.py")}
    assert tree <= set(listed) and "tpuinfer.cli" in tree
