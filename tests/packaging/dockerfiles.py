"""Just enough of Dockerfile, .dockerignore, setup.py and launch-file syntax to check the images
without a Docker engine or ROS' launch tools."""

from __future__ import annotations

import ast
import importlib
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str  # the rest of the (joined) line
    line: int  # first line, 1-based

    def exec_form(self) -> list[str] | None:
        """The JSON array of CMD/ENTRYPOINT/RUN in exec form, else None."""
        text = self.args.strip()
        if text.startswith("["):
            value = json.loads(text)
            assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
            return value
        return None


@dataclass
class Copy:
    flags: dict[str, str]
    sources: list[str]
    dest: str
    line: int


@dataclass
class Dockerfile:
    path: Path
    instructions: list[Instruction]
    args: dict[str, str] = field(default_factory=dict)  # ARG defaults, last one wins

    @classmethod
    def parse(cls, path: Path) -> Dockerfile:
        instructions: list[Instruction] = []
        pending: list[str] = []
        start = 0
        for number, raw in enumerate(path.read_text().splitlines(), start=1):
            stripped = raw.strip()
            if stripped.startswith("#") or (not stripped and not pending):
                continue  # comments are removed even inside continuations, as Docker does
            if not pending:
                start = number
            if stripped.endswith("\\"):
                pending.append(stripped[:-1].strip())
                continue
            pending.append(stripped)
            line = " ".join(p for p in pending if p)
            pending = []
            keyword, _, rest = line.partition(" ")
            instructions.append(Instruction(keyword.upper(), rest.strip(), start))
        assert not pending, f"{path}: the last instruction ends with a line continuation"
        dockerfile = cls(path, instructions)
        for ins in instructions:
            if ins.keyword == "ARG":
                name, _, default = ins.args.partition("=")
                dockerfile.args[name.strip()] = default.strip().strip('"')
        return dockerfile

    def expand(self, text: str) -> str:
        """Substitute ${NAME} and $NAME with the ARG defaults (what a plain `docker build` uses)."""
        def repl(match: re.Match) -> str:
            name = match.group(1) or match.group(2)
            assert name in self.args, f"{self.path.name}: ${name} is not a declared ARG"
            return self.args[name]

        return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", repl, text)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"{self.path.name} has no {keyword}"
        return found[-1]

    def base_images(self) -> list[str]:
        return [self.expand(i.args.split()[0]) for i in self.all("FROM")]

    def copies(self) -> list[Copy]:
        result = []
        for ins in self.instructions:
            if ins.keyword not in ("COPY", "ADD"):
                continue
            form = ins.exec_form()
            tokens = form if form is not None else shlex.split(ins.args)
            flags = {}
            while tokens and tokens[0].startswith("--"):
                name, _, value = tokens.pop(0)[2:].partition("=")
                flags[name] = value
            assert len(tokens) >= 2, f"{self.path.name}:{ins.line}: COPY needs a source and a destination"
            result.append(Copy(flags, [self.expand(t) for t in tokens[:-1]], self.expand(tokens[-1]), ins.line))
        return result

    def run_text(self) -> str:
        return "\n".join(i.args for i in self.all("RUN"))

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for ins in self.all("ENV"):
            for token in shlex.split(ins.args):
                name, sep, value = token.partition("=")
                if sep:
                    values[name] = value
        return values

    def container_path_source(self, container_path: str) -> Path | None:
        """The build-context file that COPY puts at CONTAINER_PATH (last COPY wins), or None."""
        found = None
        for copy in self.copies():
            if "from" in copy.flags:
                continue
            dest = copy.dest
            for src in copy.sources:
                if dest.endswith("/"):
                    if src.endswith("/"):  # directory contents into the directory
                        prefix = dest
                        if container_path.startswith(prefix):
                            candidate = REPO / src / container_path[len(prefix):]
                            if candidate.exists():
                                found = candidate
                    elif container_path == dest + Path(src).name:
                        found = REPO / src
                elif container_path == dest:
                    found = REPO / src
        return found


class DockerIgnore:
    """.dockerignore matching as Docker does it: patterns relative to the context root, `*` and `?`
    within one path element, `**` across elements, `!` re-includes, the last matching line wins,
    and a pattern that matches a directory excludes what is inside it."""

    def __init__(self, path: Path):
        self.rules: list[tuple[bool, re.Pattern]] = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = line[1:].strip() if negate else line
            pattern = pattern.strip("/")
            self.rules.append((negate, re.compile(self._regex(pattern))))

    @staticmethod
    def _regex(pattern: str) -> str:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return f"^{out}$"

    def excluded(self, relative: str) -> bool:
        parts = Path(relative).parts
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for negate, regex in self.rules:
            if any(regex.match(c) for c in candidates):
                result = not negate
        return result


def console_scripts() -> dict[str, str]:
    """name -> module:function from setup.py's CONSOLE_SCRIPTS, read without running setup.py."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "CONSOLE_SCRIPTS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py declares no CONSOLE_SCRIPTS")


def setup_keyword(name: str):
    """A literal keyword argument of setup() in setup.py (name, version), or a module constant."""
    tree = ast.parse((REPO / "setup.py").read_text())
    constants = {
        t.id: node.value.value
        for node in tree.body if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for t in node.targets if isinstance(t, ast.Name)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            for kw in node.keywords:
                if kw.arg == name:
                    if isinstance(kw.value, ast.Name):
                        return constants[kw.value.id]
                    return ast.literal_eval(kw.value)
    raise AssertionError(f"setup() in setup.py has no literal {name}=")


def declared_launch_arguments(path: Path) -> set[str]:
    """Names given to DeclareLaunchArgument(...) in a Python launch file (first positional or name=)."""
    assert path.is_file(), (
        f"{path.relative_to(REPO)} is missing; the Docker images and compose setup launch it")
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    computed = False  # DeclareLaunchArgument(name, ...) with the name from a variable
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called != "DeclareLaunchArgument":
                continue
            arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
            else:
                computed = True
    if computed:
        # Names come from a table in robot_compress (plain Python, importable without `launch`):
        # take the `.name` of every entry of each ARGUMENTS table the launch file imports.
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("robot_compress"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if alias.name == "ARGUMENTS":
                        names |= {a.name for a in module.ARGUMENTS}
        assert names, f"{path.name}: no argument names found (neither literal nor an imported ARGUMENTS table)"
    return names
