"""MkDocs hook: the notebooks of `notebooks/` become pages of the site, executed.

The notebooks live at the repository's top level, outside `docs/`, and are committed without
outputs (tests/test_notebooks_clean.py). This hook adds each `notebooks/*.ipynb` to the
site's files as `notebooks/<name>.ipynb`, read from where it is (no copy, no symlink); the
`mkdocs-jupyter` plugin then executes it at build time and renders it with its outputs and
plots. A notebook that fails to run fails the build.

TensorFlow's C++ start-up lines (absl's "All log messages before absl::InitializeLog()" and
oneDNN's notice), which `TF_CPP_MIN_LOG_LEVEL` does not silence, are dropped from the
rendered pages when they are all a cell printed to stderr; any other stderr output stays.
"""

import html
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

_STDERR_OUTPUT = re.compile(
    r'<div class="jp-OutputArea-child">\s*<div class="jp-OutputPrompt jp-OutputArea-prompt">'
    r'</div>\s*<div class="jp-RenderedText jp-OutputArea-output" '
    r'data-mime-type="application/vnd.jupyter.stderr"[^>]*>\s*<pre>(.*?)</pre>\s*</div>\s*</div>',
    flags=re.DOTALL,
)
_TENSORFLOW_LOG_LINE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*"
)


@event_priority(100)  # before mkdocs-jupyter's `on_files` turns notebooks into pages
def on_files(files, config):
    root = Path(config.config_file_path).parent
    for notebook in sorted((root / "notebooks").glob("*.ipynb")):
        files.append(
            File(
                f"notebooks/{notebook.name}",
                src_dir=str(root),
                dest_dir=config.site_dir,
                use_directory_urls=config.use_directory_urls,
            )
        )
    return files


def _is_tensorflow_startup_log(match: re.Match) -> bool:
    lines = html.unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip().splitlines()
    return bool(lines) and all(_TENSORFLOW_LOG_LINE.fullmatch(line) for line in lines)


def on_page_content(html_text, page, config, files):
    if not page.file.src_uri.endswith(".ipynb"):
        return html_text
    return _STDERR_OUTPUT.sub(
        lambda match: "" if _is_tensorflow_startup_log(match) else match.group(0), html_text
    )
