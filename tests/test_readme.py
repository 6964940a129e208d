"""The README's Python example runs as written; the citation file names the package's version."""

import pathlib
import re

import mscm_jax

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    assert "+----+" in capsys.readouterr().out


def test_citation_file_names_the_package_version():
    (version,) = re.findall(r"^version: (\S+)$", (ROOT / "CITATION.cff").read_text(), flags=re.M)
    assert version == mscm_jax.__version__
