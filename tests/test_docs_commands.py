"""The shell commands in README.md and docs/*.md, and the flags they name, checked against the code.

1. Every command in a fenced shell block (```bash, ```sh, ```shell, ```console, or an untagged block
   whose first line is a command) is either run here (`RUN`: cheap commands, seconds each, mostly
   TensorFlow's import) or listed in `EXCLUDED` with the reason it is not. A new command in the docs
   therefore fails this test until it is run or knowingly excluded.
2. Every `--flag` the docs name exists in the entry point it belongs to, as that entry point's
   `--help` lists it: flags in a command (`python -m vtab_eval.run --sweep=...`, in a block or an
   inline code span) belong to the command's module; other flags belong to the entry point whose
   section they are in (a heading naming `python -m X`), or to any entry point outside such sections.
   Flags that are not ours (absl's built-ins, other tools') are listed in `NOT_OURS` with the reason.

The commands run in parallel subprocesses in the repository root, with this interpreter as `python`
(the venv's, when pytest runs from it).
"""

import concurrent.futures
import dataclasses
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DOC_PAGES = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))

# Our absl entry points; `python -m <module> --help` lists each one's flags.
ENTRY_POINTS = (
    "bit_experts.train",
    "bit_experts.expert_quality",
    "hub_export.publish",
    "hub_export.import_bit_checkpoint",
    "hub_export.kaggle_models",
    "vtab_eval.rank",
    "vtab_eval.run",
    "vtab_eval.demo",
    "vtab_eval.audit",
    "vtab_eval.list_tasks",
)
OUR_PACKAGES = ("bit_experts", "hub_export", "vtab_eval", "benchmarks")

# Doc commands run by this test (full match after joining continuation lines and squeezing spaces).
RUN = (
    r"python -m (?P<module>[\w.]+) --help",
    r"python -m vtab_eval\.list_tasks(?: --(?:suite|format)=\w+)*",
)

# Doc commands not run here: a pattern (full match, as in RUN) and the reason. Every pattern must
# match a doc command. Patterns key on what makes a command unrunnable here (a placeholder such as
# `--collection=C`, a long job), so a usage line that gains an option stays excluded.
EXCLUDED = {
    r'python3 -m venv \.venv && .* && pip install -q -e "\.\[test\]" && ruff format --check \. .*': (
        "the CI line itself (README's test-command block, run by .ci/run): it runs this test"
    ),
    r"python3 -m venv \.venv && .* && python -m vtab_eval\.demo --workdir=runs/demo": (
        "the whole demo: 15-42 minutes on 2 cores; tests/vtab_eval/test_demo.py runs its --quick path"
    ),
    r"python -m hub_export\.import_bit_checkpoint --checkpoint=BiT-M-R50x1\.npz --output_dir=DIR.*": (
        "needs a downloaded BiT checkpoint; DIR is a placeholder "
        "(tests/hub_export/test_import_bit_checkpoint.py runs it on a generated one)"
    ),
    r"python -m vtab_eval\.rank --collection=C .*": "usage synopsis: C, D and F are placeholders",
    r"python -m vtab_eval\.(rank|run) (--config=local )?--collection=runs/demo/collection .*": (
        "needs the finished demo in runs/demo (README's first command); tests/vtab_eval/"
        "test_rank_cli.py and test_run_cli.py run both commands on a toy collection"
    ),
    r"python -m hub_export\.publish --workdir=runs/upstream --collection_dir=runs/collection": (
        "needs the trained work directory of the README's train command above; "
        "tests/hub_export/test_publish.py publishes trained toy work directories"
    ),
    r"python -m vtab_eval\.run --collection=C --tasks=(vtab1k|table3) --output_dir=OUT .*": (
        "placeholders C and OUT; the VTAB-1k and table-3 tasks need the TFDS data and take hours"
    ),
    r"python -m hub_export\.publish .*--collection_dir=C .*": (
        "usage synopsis: W, C and the other capitals are placeholders"
    ),
    r"python -m hub_export\.kaggle_models --collection_dir=C .*": (
        "usage synopsis: C, K, OWNER and MODEL are placeholders; tests/hub_export/"
        "test_kaggle_models.py runs the command on a published toy collection"
    ),
    r"python -m vtab_eval\.audit --collection=C .*": (
        "usage synopsis: C, T1, T2 and OUT are placeholders"
    ),
    r"python -m vtab_eval\.audit --collection=runs/demo/\S+ .*": (
        "needs the finished demo in runs/demo and fine-tunes the task bank: hours on 2 cores"
    ),
    r"python -m bit_experts\.expert_quality --workdir=runs/demo/upstream .*": (
        "needs the finished demo in runs/demo; tests/vtab_eval/test_demo.py runs it on the "
        "quick demo's upstream"
    ),
    r"python -m bit_experts\.train --config=world_local --workdir=\S+": (
        "the whole world_local job: 4-7 minutes on 2 cores (docs/training.md)"
    ),
    r"python -m bit_experts\.train --config=world_local:quick .*": (
        "a training run (about a minute); tests/bit_experts/test_train.py runs the quick config"
    ),
    r"python -m bit_experts\.train --config=my_config\.py:arg --workdir=W .*": (
        "my_config.py and W are placeholders"
    ),
    r'pip install -e "\.\[ray\]"': (
        "installs the optional Ray extra; CI installs Ray with the test extra (setup.py)"
    ),
    r"python -m vtab_eval\.run --config=vtab1k --collection=C .*": (
        "placeholders C and OUT; VTAB-1k needs the TFDS data and GPUs (docs/scale.md); "
        "tests/vtab_eval/test_ray_executor.py and test_ray_cluster.py run --executor=ray on toys"
    ),
}

# Flags the docs may name that no entry point's --help lists, with the reason.
NOT_OURS = {
    "help": "absl.app's built-in of every entry point",
    "helpfull": "absl.app's built-in of every entry point",
    "helpshort": "absl.app's built-in of every entry point",
    "helpxml": "absl.app's built-in of every entry point",
    "only_check_args": "absl.app's built-in of every entry point",
    "verbosity": "absl.logging's built-in of every entry point (restores TensorFlow's logs)",
    "v": "absl.logging's built-in (short for --verbosity)",
    "logtostderr": "absl.logging's built-in of every entry point",
    "alsologtostderr": "absl.logging's built-in of every entry point",
    "manual_dir": "tensorflow_datasets' flag (`tfds build --manual_dir`), for TFDS tasks",
    "head": "Ray's `ray start --head` (docs/scale.md)",
    "port": "Ray's `ray start --port` (docs/scale.md)",
    "address": "Ray's `ray start --address` (docs/scale.md)",
}

# Commands of other tools: their flags are theirs. A segment starting with one of these is skipped.
OTHER_TOOLS = {
    "pip": "pip's own flags",
    "pytest": "pytest's own flags",
    "ruff": "ruff's own flags",
    "tensorboard": "TensorBoard's own flags",
    "tfds": "tensorflow_datasets' own command line",
    "bazel": "Bazel's own flags",
    "python3 -m venv": "the standard library's venv",
    "python -m venv": "the standard library's venv",
    ".": "the shell's `source`",
    "cd": "the shell's cd",
}

SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
COMMAND_START = re.compile(r"^(?:\$ )?(?:python3?|pip|pytest|ruff|bazel|tensorboard|tfds)\b")
FLAG = re.compile(r"(?<![\w-])--(?:\[no\])?([a-z][a-z0-9_]*)")
MODULE_CALL = re.compile(r"^(python3? -m )?([a-z_]+(?:\.[a-z_0-9]+)+)\b")
SEGMENT_SPLIT = re.compile(r"\s+(?:&&|\|\||\||;)\s+")


@dataclasses.dataclass(frozen=True)
class DocCommand:
    page: str  # path relative to the repository
    line: int  # 1-based line of the command's first line
    text: str  # continuation lines joined, runs of spaces squeezed, trailing comment dropped

    def where(self):
        return f"{self.page}:{self.line}: {self.text}"


def _fenced_blocks(lines):
    """(language, index of the first content line, content lines) of each fenced block."""
    blocks, i = [], 0
    while i < len(lines):
        match = re.match(r"^\s*```([\w+-]*)\s*$", lines[i])
        if not match:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
            j += 1
        blocks.append((match.group(1), i + 1, lines[i + 1 : j]))
        i = j + 1
    return blocks


def _is_shell_block(language, content):
    if language in SHELL_LANGUAGES:
        return True
    first = next((ln.strip() for ln in content if ln.strip()), "")
    return language == "" and bool(COMMAND_START.match(first))


def commands_of(text, page="<text>"):
    """The shell commands of one markdown text, as `DocCommand`s in order."""
    lines = text.splitlines()
    found = []
    for language, start, content in _fenced_blocks(lines):
        if not _is_shell_block(language, content):
            continue
        pending, first = [], None
        for offset, raw in enumerate(content):
            line = raw.strip()
            if not pending and (not line or line.startswith("#")):
                continue
            if first is None:
                first = start + offset + 1
            line = re.sub(r"^\$ ", "", line) if not pending else line
            if line.endswith("\\"):
                pending.append(line[:-1])
                continue
            pending.append(line)
            joined = " ".join(" ".join(pending).split())
            joined = re.sub(r"\s+#\s.*$", "", joined)
            found.append(DocCommand(page, first, joined))
            pending, first = [], None
    return found


def doc_commands():
    return [
        cmd
        for path in DOC_PAGES
        for cmd in commands_of(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    ]


def _run_match(command):
    return next((p for p in RUN if re.fullmatch(p, command.text)), None)


def _exclusions(command):
    return [pattern for pattern in EXCLUDED if re.fullmatch(pattern, command.text)]


def test_commands_are_extracted_from_shell_blocks_with_continuations():
    text = "\n".join(
        [
            "```bash",
            "# a comment",
            "$ python -m a.b --x=1 \\",
            "    --y=2   # trailing comment",
            "pip install -e .",
            "```",
            "```",
            "OUT/",
            "  results/",
            "```",
            "```python",
            "python = 3",
            "```",
            "```",
            "python -m c.d --z",
            "```",
        ]
    )
    assert commands_of(text, "p.md") == [
        DocCommand("p.md", 3, "python -m a.b --x=1 --y=2"),
        DocCommand("p.md", 5, "pip install -e ."),
        DocCommand("p.md", 15, "python -m c.d --z"),
    ]


def test_every_doc_command_is_run_or_excluded_with_a_reason():
    commands = doc_commands()
    assert commands, "no shell commands found in README.md and docs/*.md"
    problems = []
    for command in commands:
        ran, excluded = _run_match(command), _exclusions(command)
        if not ran and not excluded:
            problems.append(
                f"neither run nor excluded (add it to RUN or EXCLUDED): {command.where()}"
            )
        elif ran and excluded:
            problems.append(f"both run and excluded: {command.where()}")
        elif len(excluded) > 1:
            problems.append(f"matches several exclusions {excluded}: {command.where()}")
    for pattern in EXCLUDED:
        if not any(re.fullmatch(pattern, c.text) for c in commands):
            problems.append(f"stale exclusion, no doc command matches it: {pattern!r}")
    assert not problems, "\n".join(problems)


def _venv_python_path(directory):
    """A PATH whose `python` and `python3` are this interpreter."""
    # A wrapper, not a symlink: a symlinked venv interpreter outside its venv forgets the venv.
    directory.mkdir(exist_ok=True)
    for name in ("python", "python3"):
        wrapper = directory / name
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        wrapper.chmod(0o755)
    return f"{directory}{os.pathsep}{os.environ.get('PATH', '')}"


def _run_all(commands, path):
    env = {**os.environ, "PATH": path}

    def one(command):
        return subprocess.run(
            ["bash", "-c", command],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,  # a loaded 2-core machine; each takes seconds when idle
        )

    workers = max(2, os.cpu_count() or 2)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return dict(zip(commands, pool.map(one, commands), strict=True))


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """Command text -> CompletedProcess, for every RUN doc command and every entry point's --help."""
    texts = [c.text for c in doc_commands() if _run_match(c)]
    texts += [f"python -m {module} --help" for module in ENTRY_POINTS]
    path = _venv_python_path(tmp_path_factory.mktemp("bin"))
    return _run_all(list(dict.fromkeys(texts)), path)


def _help_section(module, stdout):
    """The flags block of `module`'s own --help section (absl heads it with the file's path)."""
    file_name = re.escape(module.replace(".", "/") + ".py")
    match = re.search(rf"^\S*{file_name}:\n((?:[ \t]+.*\n?)*)", stdout, re.M)
    return match.group(1) if match else None


def entry_point_flags(module, stdout):
    """The flag names an entry point's --help lists; a boolean also as `no<name>`."""
    section = _help_section(module, stdout)
    if section is None:
        return None
    names = set()
    for negatable, name in re.findall(r"^\s+(?:-\?,)?--(\[no\])?(\w+)", section, re.M):
        names.add(name)
        if negatable:
            names.add(f"no{name}")
    return names


def test_run_doc_commands_succeed(ran):
    commands = [c for c in doc_commands() if _run_match(c)]
    assert commands, "README.md no longer shows any cheap command (e.g. `python -m X --help`)"
    problems = []
    for command in commands:
        done = ran[command.text]
        module = re.fullmatch(RUN[0], command.text)
        if module:
            # absl's --help prints the flags and exits with 1.
            ok = done.returncode in (0, 1) and _help_section(module["module"], done.stdout)
        else:
            ok = done.returncode == 0 and done.stdout.strip()
        if not ok or "Traceback" in done.stderr:
            problems.append(f"{command.where()}\n  exit {done.returncode}\n{done.stderr[-1500:]}")
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def flags_by_entry_point(ran):
    flags = {}
    for module in ENTRY_POINTS:
        done = ran[f"python -m {module} --help"]
        names = entry_point_flags(module, done.stdout)
        assert names, f"python -m {module} --help lists no flags:\n{done.stderr[-1500:]}"
        flags[module] = names
    return flags


def _segments(command_text):
    return [s.strip() for s in SEGMENT_SPLIT.split(command_text) if s.strip()]


def _other_tool(segment):
    return next((t for t in OTHER_TOOLS if segment == t or segment.startswith(t + " ")), None)


def _check_invocation(segment, flags, where, problems):
    """Flags of one command segment (`python -m X ...` or `X ...` in prose) against X's."""
    if _other_tool(segment):
        return True
    call = MODULE_CALL.match(segment)
    if not call or call.group(2).split(".")[0] not in OUR_PACKAGES:
        return False
    module = call.group(2)
    named = FLAG.findall(segment[call.end() :])
    if module not in flags:
        if not call.group(1):
            return False  # a dotted name in prose (`hub_export.publish.publish`), not a command
        if not (REPO / (module.replace(".", "/") + ".py")).exists():
            problems.append(f"{where}: `python -m {module}`: no such module")
        elif named:
            problems.append(
                f"{where}: flags of {module}, which ENTRY_POINTS does not list: {named}"
            )
        return True
    for name in named:
        if name not in flags[module] and name not in NOT_OURS:
            problems.append(f"{where}: `{module}` has no flag --{name}")
    return True


def _check_prose(text, section, flags, where, problems):
    known = flags[section] if section else set().union(*flags.values())
    for name in FLAG.findall(text):
        if name not in known and name not in NOT_OURS:
            owner = f"`{section}`" if section else "any entry point"
            problems.append(f"{where}: --{name} is not a flag of {owner}")


def doc_flag_problems(text, page, flags):
    """Every flag `text` (one markdown page) names that does not exist where the page puts it."""
    problems = []
    lines = text.splitlines()
    shell_lines = set()
    for language, start, content in _fenced_blocks(lines):
        if _is_shell_block(language, content):
            shell_lines.update(range(start - 1, start + len(content) + 1))
    for command in commands_of(text, page):
        for segment in _segments(command.text):
            if not _check_invocation(segment, flags, f"{page}:{command.line}", problems):
                _check_prose(segment, None, flags, f"{page}:{command.line}", problems)
    section, section_level, fenced = None, 0, False
    for index, line in enumerate(lines):
        if index in shell_lines:
            continue
        if re.match(r"^\s*```", line):
            fenced = not fenced
            continue
        heading = None if fenced else re.match(r"^(#+)\s", line)
        if heading:
            level = len(heading.group(1))
            call = re.search(r"python3? -m ([\w.]+)", line)
            if call and call.group(1) in flags:
                section, section_level = call.group(1), level
            elif section and level <= section_level:
                section = None
            continue
        where = f"{page}:{index + 1}"
        rest = line
        for span in re.findall(r"`([^`]+)`", line):
            parts = _segments(span)
            if parts and _check_invocation(parts[0], flags, where, problems):
                rest = rest.replace(f"`{span}`", " ", 1)
        _check_prose(rest, section, flags, where, problems)
    return problems


def test_doc_flag_check_catches_a_drifted_flag():
    flags = {"vtab_eval.run": {"sweep", "seed"}, "vtab_eval.demo": {"quick", "nodeterministic"}}
    text = "\n".join(
        [
            "## `python -m vtab_eval.demo`",
            "`--quick` and `--nodeterministic`; `vtab_eval.run --sweep=x --seed=1` elsewhere.",
            "`--sweep` is not the demo's.",
            "## Other",
            "`--sweep`, `--verbosity`, `pytest --lf`, `--nosuch`.",
            "```",
            "python -m vtab_eval.run --sweep=s \\",
            "    --quick",
            "```",
        ]
    )
    assert doc_flag_problems(text, "p.md", flags) == [
        "p.md:7: `vtab_eval.run` has no flag --quick",
        "p.md:3: --sweep is not a flag of `vtab_eval.demo`",
        "p.md:5: --nosuch is not a flag of any entry point",
    ]


def test_every_flag_the_docs_name_exists(flags_by_entry_point):
    problems = []
    for path in DOC_PAGES:
        text = path.read_text(encoding="utf-8")
        problems += doc_flag_problems(text, str(path.relative_to(REPO)), flags_by_entry_point)
    assert not problems, "\n".join(problems)
