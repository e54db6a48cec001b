"""Griffe extension: render Keras-style `Example:` doctests as code in the API reference.

keras_l1 writes its docstring examples as Keras does: an `Example:` line, a blank line, then
the doctest at the docstring's own indentation. Google-style parsers only take *indented*
lines as a section's body, so without this the doctest would render as nested Markdown
block quotes (and its output lines, such as `[0.0, 0.5, 1.0]`, as broken links). This indents
the doctest under its heading before griffe parses the docstring; the source is unchanged.
"""

import re

import griffe

_EXAMPLE_HEADING = re.compile(r"^Examples?:\s*$")
_ANY_HEADING = re.compile(r"^[A-Z][A-Za-z ]*:\s*$")


def indent_examples(text: str) -> str:
    """Indents the unindented body of each `Example:` / `Examples:` section by 4 spaces."""
    lines = text.splitlines()
    result = []
    inside = False
    for index, line in enumerate(lines):
        if inside and _ANY_HEADING.match(line):
            inside = False
        result.append(f"    {line}" if inside and line.strip() else line)
        if _EXAMPLE_HEADING.match(line):
            body = [later for later in lines[index + 1 :] if later.strip()]
            inside = bool(body) and body[0].startswith(">>>")
    return "\n".join(result)


class DoctestExamples(griffe.Extension):
    """Applies `indent_examples` to every docstring griffe loads."""

    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = indent_examples(obj.docstring.value)
