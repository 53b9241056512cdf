"""Python source as the book shows it: fitted to the column of the page (about 80 characters)."""

from __future__ import annotations

import shutil
import subprocess
import textwrap


def fit_source(text: str, width: int = 80) -> str:
    """Python source reflowed for the book's column (the code itself is unchanged): dedented; a trailing comment
    that would push its line past ``width`` moved onto its own line above; formatted by ruff at ``width - 1``
    when ruff is installed; and comment or docstring lines still too long broken at a space, the rest
    continuing at the same indentation. The library's source in chapters (``figures.source_code``) and the
    exercises' solutions are shown this way."""

    def lifted(line: str) -> list[str]:  # a long line's trailing comment, moved above it
        code, hash_, comment = line.partition("  # ")
        if len(line) <= width or not hash_ or not code.strip() or '"' in comment or "'" in comment:
            return [line]
        indent = code[: len(code) - len(code.lstrip())]
        return [f"{indent}# {comment}", code.rstrip()]

    text = "\n".join(out for line in textwrap.dedent(text).splitlines() for out in lifted(line))
    ruff = shutil.which("ruff")
    if ruff is not None and any(len(line) > width for line in text.splitlines()):
        command = [ruff, "format", f"--line-length={width - 1}", "--stdin-filename=source.py", "-"]
        done = subprocess.run(command, input=text + "\n", capture_output=True, text=True, check=False)
        if done.returncode == 0:
            text = done.stdout
    lines: list[str] = []
    in_string = False
    for line in text.splitlines():
        stripped = line.lstrip()
        prose = in_string or stripped.startswith(("#", '"""'))
        in_string ^= line.count('"""') % 2 == 1
        while prose and len(line) > width and " " in line[len(line) - len(stripped) : width]:
            indent = line[: len(line) - len(stripped)]
            cut = line.rindex(" ", len(indent), width)
            lines.append(line[:cut])
            rest = line[cut + 1 :]
            line = indent + ("# " if stripped.startswith("#") else "") + rest
        lines.append(line)
    return "\n".join(lines) + "\n"
