"""The docs cannot drift from the code: every `--flag` README and docs/*.md use with a verb is an option of that
verb; no install line asks the package index for scnet-deploy (README: it is installed from its checkout or wheel);
the torch line takes PyTorch's CPU wheel on the public index and works here; each backend's install hint is the
requirement its extra declares in pyproject.toml."""

import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"
TORCH_LINE = f"pip install torch==2.13.0 {CPU_INDEX}"


def verb_options() -> dict[str, set[str]]:
    """Each verb's options, as the CLI declares them (every name of every option, negations included)."""
    import typer

    from scnet_deploy.cli import app

    group = typer.main.get_command(app)
    return {name: {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}
            for name, command in group.commands.items()}


def commands(text: str) -> list[str]:
    """Every command written in ``text``: each line of a fenced code block, each inline code span."""
    found, prose, fenced = [], [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        (found if fenced else prose).append(line)
    # an inline span may wrap onto the next line of its paragraph
    return found + [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", "\n".join(prose))]


def flags_by_verb(command: str, verbs: set[str]) -> list[tuple[str, str]]:
    """(verb, --flag) for each flag that follows a verb in ``command`` (``scnet-deploy VERB ...``, or a span that
    starts with the verb), up to a comment or the next shell command."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        words = command.split()
    pairs, verb = [], None
    for i, word in enumerate(words):
        word = word.strip("[]{}()")  # a synopsis: [--runs N | --seconds T]
        if word in ("&&", "||", ";") or word.endswith(";"):
            verb = None
        elif word in verbs and (i == 0 or words[i - 1] == "scnet-deploy"):
            verb = word
        elif verb and word.startswith("--"):
            pairs.append((verb, word.split("=")[0].rstrip(",.):")))
    return pairs


def test_the_flag_reader_reads_flags_per_verb():
    verbs = {"export", "bench"}
    assert flags_by_verb("scnet-deploy export m.pth -f onnx --int8 -o eng  # --not-this", verbs) == \
        [("export", "--int8")]
    assert flags_by_verb("bench --size 8x8 && scnet-deploy export --opt-size 1x1", verbs) == \
        [("bench", "--size"), ("export", "--opt-size")]
    assert flags_by_verb("scnet-deploy bench MODEL... [--runs N | --seconds T]", verbs) == \
        [("bench", "--runs"), ("bench", "--seconds")]
    assert flags_by_verb("pip install --upgrade pip", verbs) == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_flag_the_docs_use_is_an_option_of_its_verb(doc):
    options = verb_options()
    wrong = sorted({f"{verb} {flag}" for command in commands(doc.read_text())
                    for verb, flag in flags_by_verb(command, set(options)) if flag not in options[verb]})
    assert wrong == [], f"{doc.name} uses options its verbs do not have"


def test_the_check_catches_an_option_a_verb_lacks():
    options = verb_options()
    used = flags_by_verb("scnet-deploy bench eng --shape 8x8 --opt-size 1x1", set(options))
    assert [f for v, f in used if f not in options[v]] == ["--shape", "--opt-size"]


FORBIDDEN = re.compile(r"pip install(\s+-\S+)*\s+['\"]?scnet[-_]deploy(\[|['\"]?(\s|$|`))")


@pytest.mark.parametrize("path", [*DOCS, *sorted((ROOT / "scnet_deploy").rglob("*.py")),
                                  *sorted((ROOT / "exporters").rglob("*.py")),
                                  *sorted((ROOT / "calibration").rglob("*.py"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_install_line_asks_the_index_for_scnet_deploy(path):
    """README: scnet-deploy is installed from its checkout (``pip install -e .``) or its wheel, never from the
    package index, where the name could be someone else's; hints in the code name the same."""
    assert [m.group(0) for m in FORBIDDEN.finditer(path.read_text())] == []


def test_the_forbidden_form_is_recognised():
    assert FORBIDDEN.search("pip install 'scnet-deploy[openvino]'") and FORBIDDEN.search("pip install scnet-deploy")
    assert not FORBIDDEN.search('pip install "scnet_deploy-0.1.0-py3-none-any.whl[openvino]"')
    assert not FORBIDDEN.search("pip install -e '.[export]' in your scnet-deploy checkout")


def test_the_torch_line_takes_the_cpu_wheel_on_the_public_index_and_ci_runs_it():
    """On the public index, Linux torch brings CUDA; PyTorch's CPU index beside it gives the CPU wheel
    (2.13.0+cpu sorts above 2.13.0). README's setup commands and CI's install run the same line."""
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    installs = [line for line in readme.splitlines() if "pip install torch" in line]
    assert installs and all(TORCH_LINE in line for line in installs)
    assert any("pip install" in line and "torch==2.13.0" in line and CPU_INDEX in line for line in ci.splitlines())


def _requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {*project["dependencies"], *(r for reqs in project["optional-dependencies"].values() for r in reqs)}


def test_install_hints_name_the_requirements_pyproject_declares():
    from scnet_deploy.errors import EXPORT_EXTRA
    from scnet_deploy.exporters.registry import backends

    declared = {r.split("#")[0].strip() for r in _requirements()}
    for b in backends():
        asked = re.search(r"pip install '([^']+)'", b.install)
        assert asked and asked.group(1) in declared, b.install
    assert "pip install -e '.[export]'" in EXPORT_EXTRA


def tour_commands() -> tuple[dict, list[str]]:
    """README's Tour, the block that runs here: its variables and its commands, in order."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Tour"):].split("```bash", 1)[1].split("```", 1)[0]
    variables, lines = {}, []
    for line in block.strip().splitlines():
        name, _, value = line.partition("=")
        if _ and re.fullmatch(r"[A-Z0-9_]+", name):
            variables[name] = value
        else:
            lines.append(line)
    return variables, lines


def test_the_tour_reads_as_commands():
    variables, lines = tour_commands()
    assert set(variables) == {"MODEL", "SET5"} and all(line.startswith("scnet-deploy ") for line in lines)
    assert (ROOT / variables["MODEL"]).is_file()  # the shipped model a newcomer has


@pytest.mark.slow
def test_the_tour_runs_as_written(tmp_path):
    """Every command of the Tour, in order, from a fresh folder (its outputs there), with MODEL and SET5 as the Tour
    sets them: each exits 0."""
    import os
    import subprocess
    import sys

    variables, lines = tour_commands()
    env = {**os.environ, **{k: str((ROOT / v).resolve()) for k, v in variables.items()}}
    if not Path(env["SET5"]).is_dir():
        pytest.skip(f"the Tour's SET5 ({env['SET5']}) is absent: the project's shared folder is not beside it")
    scnet = f"{sys.executable} -m scnet_deploy"
    for line in lines:
        command = line.split("  #")[0].replace("scnet-deploy", scnet, 1)
        run = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=900)
        assert run.returncode == 0, f"{line}: {run.stderr[-1500:]}"
