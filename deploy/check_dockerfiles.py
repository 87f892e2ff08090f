#!/usr/bin/env python3
"""Static checks of deploy/docker/*.Dockerfile, for machines without a container engine.

Each Dockerfile must parse (instructions, line continuations, JSON exec forms), pin every base
image by tag, name only earlier stages in `COPY --from`, copy only paths that exist in the
repository and that its own `<name>.Dockerfile.dockerignore` lets into the build context (the
context is the repository root), and end in a stage that runs as a non-root user with an
exec-form ENTRYPOINT or CMD and a HEALTHCHECK. Standard library only.

    python3 deploy/check_dockerfiles.py [DOCKERFILE...]
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip
EXEC_FORM = {"CMD", "ENTRYPOINT", "SHELL"}


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass
class Stage:
    name: str | None
    image: str
    line: int
    body: list[Instruction] = field(default_factory=list)


def parse(text: str) -> list[Instruction]:
    """Instructions with continuations joined; comments and blank lines dropped."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # comments may sit inside a continued instruction too
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        pending.append(stripped)
        joined = " ".join(p.strip() for p in pending if p.strip())
        pending = []
        keyword, _, args = joined.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    if pending:
        out.append(Instruction(start, "<unterminated>", " ".join(pending)))
    return out


def ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex over slash-separated paths from the context root."""
    pattern = pattern.strip("/")
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
    # A pattern that matches a directory excludes (or re-includes) everything under it.
    return re.compile(out + "(?:/.*)?")


def load_ignore(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            rules.append((negate, ignore_regex(line.lstrip("!").strip())))
    return rules


def included(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches decides."""
    keep = True
    for negate, regex in rules:
        if regex.fullmatch(rel):
            keep = negate
    return keep


def flags_and_operands(args: str) -> tuple[dict[str, str], list[str]]:
    flags: dict[str, str] = {}
    words = args.split()
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = value
    if words and words[0].startswith("["):
        words = json.loads(" ".join(words))
    return flags, words


def check(dockerfile: Path) -> list[str]:
    problems: list[str] = []

    def say(line: int, message: str) -> None:
        problems.append(f"{dockerfile.relative_to(REPO)}:{line}: {message}")

    rules = load_ignore(dockerfile.with_name(dockerfile.name + ".dockerignore"))
    if not rules:
        say(0, f"no {dockerfile.name}.dockerignore beside it: the whole repository is sent")
    stages: list[Stage] = []
    for ins in parse(dockerfile.read_text()):
        if ins.keyword not in INSTRUCTIONS:
            say(ins.line, f"unknown instruction {ins.keyword!r}")
            continue
        if ins.keyword == "FROM":
            flags, words = flags_and_operands(ins.args)
            if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
                say(ins.line, f"FROM should be `image[:tag] [AS name]`: {ins.args}")
                continue
            image = words[0]
            known = {s.name for s in stages}
            if image not in known:
                tag = image.rsplit("/", 1)[-1].partition("@")[0].partition(":")[2]
                if "@sha256:" not in image and tag in ("", "latest"):
                    say(ins.line, f"base image {image} is not pinned by a tag")
            name = words[2] if len(words) == 3 else None
            if name and name in known:
                say(ins.line, f"stage name {name} used twice")
            stages.append(Stage(name, image, ins.line))
            continue
        if not stages:
            if ins.keyword != "ARG":
                say(ins.line, f"{ins.keyword} before the first FROM")
            continue
        stages[-1].body.append(ins)
        if ins.keyword in EXEC_FORM or (ins.keyword == "HEALTHCHECK" and "CMD [" in ins.args):
            form = ins.args[ins.args.index("[") :] if "[" in ins.args else ""
            try:
                parsed = json.loads(form)
                if not (isinstance(parsed, list) and all(isinstance(a, str) for a in parsed)):
                    raise ValueError
            except ValueError:
                say(ins.line, f"{ins.keyword} should use the JSON exec form: {ins.args}")
        if ins.keyword in ("COPY", "ADD"):
            flags, words = flags_and_operands(ins.args)
            if len(words) < 2:
                say(ins.line, f"{ins.keyword} needs a source and a destination")
                continue
            if "from" in flags:
                earlier = {s.name for s in stages[:-1]}
                if flags["from"] not in earlier:
                    say(ins.line, f"--from={flags['from']} names no earlier stage")
                continue
            for source in words[:-1]:
                check_source(source, ins.line, rules, say)
    if not stages:
        say(0, "no FROM")
        return problems
    final = stages[-1]
    keywords = {i.keyword for i in final.body}
    users = [i for i in final.body if i.keyword == "USER"]
    if not users or users[-1].args.split(":")[0] in ("root", "0"):
        say(final.line, "the final stage does not switch to a non-root USER")
    if "HEALTHCHECK" not in keywords:
        say(final.line, "the final stage has no HEALTHCHECK")
    if not keywords & {"ENTRYPOINT", "CMD"}:
        say(final.line, "the final stage has neither ENTRYPOINT nor CMD")
    return problems


def check_source(source: str, line: int, rules: list, say) -> None:  # type: ignore[type-arg]
    path = REPO / source
    rel = source.strip("/")
    if any(c in source for c in "*?["):
        matches = [p for p in REPO.glob(source) if p.is_file()]
    elif path.is_dir():
        matches = [p for p in path.rglob("*") if p.is_file()]
    elif path.is_file():
        matches = [path]
    else:
        say(line, f"COPY source {source} does not exist in the repository")
        return
    sent = [p for p in matches if included(p.relative_to(REPO).as_posix(), rules)]
    if not sent:
        say(line, f"COPY source {rel} is excluded by the .dockerignore (nothing of it is sent)")


def main(argv: list[str]) -> int:
    default = sorted((REPO / "deploy/docker").glob("*.Dockerfile"))
    files = [Path(a).resolve() for a in argv] or default
    if not files:
        print("check_dockerfiles: no Dockerfiles found", file=sys.stderr)
        return 1
    problems = [p for f in files for p in check(f)]
    for p in problems:
        print(p, file=sys.stderr)
    names = ", ".join(f.name for f in files)
    if problems:
        print(f"check_dockerfiles: {len(problems)} problems in {names}", file=sys.stderr)
        return 1
    print(f"check_dockerfiles: {len(files)} Dockerfiles parse and pass: {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
