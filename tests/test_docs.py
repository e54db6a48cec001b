"""The documentation site agrees with the package and with the README."""

import importlib.util
import pathlib
import re

import keras
import numpy as np
import pytest

import keras_l1

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _api_entries() -> list:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    return re.findall(r"^::: keras_l1\.(\w+)\s*$", text, flags=re.MULTILINE)


def _readme_setup_commands() -> list:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.DOTALL)


class TestApiReference:
    def test_every_public_name_has_an_entry(self):
        missing = sorted(set(keras_l1.__all__) - set(_api_entries()))
        assert missing == []

    def test_every_entry_is_a_public_name(self):
        stale = sorted(set(_api_entries()) - set(keras_l1.__all__))
        assert stale == []

    def test_entries_are_unique(self):
        entries = _api_entries()
        assert len(entries) == len(set(entries))

    def test_every_public_name_has_a_doctest_example(self):
        # pytest --doctest-modules runs these; a name without one is untested documentation.
        without = [
            name
            for name in keras_l1.__all__
            if "Example" not in (getattr(keras_l1, name).__doc__ or "")
            or ">>>" not in (getattr(keras_l1, name).__doc__ or "")
        ]
        assert without == []


class TestGettingStarted:
    def test_readme_setup_commands_appear_verbatim(self):
        commands = _readme_setup_commands()
        index = (DOCS / "index.md").read_text(encoding="utf-8")
        assert len(commands) == 2
        for command in commands:
            assert f"```bash\n{command}\n```" in index


class TestSavingLoadingPage:
    def test_forgot_to_import_errors_are_the_ones_quoted(self, tmp_path, fresh_python):
        page = (DOCS / "saving-loading.md").read_text(encoding="utf-8")
        regularizer_line = re.search(
            r"^Exception encountered: Could not interpret regularizer identifier: .*$",
            page,
            flags=re.MULTILINE,
        ).group(0)
        optimizer_prefix = re.search(
            r"^(TypeError: Could not locate class 'ProximalOptimizer'\..*?Full object config: )",
            page,
            flags=re.MULTILINE,
        ).group(1)

        # The page's model (regularizer on the kernel) and one whose only keras_l1 object
        # is the optimizer.
        with_regularizer = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(
                    8, kernel_regularizer=keras_l1.L1Regularizer(0.01), name="hidden"
                ),
                keras.layers.Dense(1),
            ]
        )
        with_regularizer.compile(keras_l1.ProximalOptimizer("adam"), "mse")
        with_regularizer.save(tmp_path / "regularizer.keras")
        optimizer_only = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(1, kernel_regularizer=keras.regularizers.L1())]
        )
        optimizer_only.compile(keras_l1.ProximalOptimizer("adam"), "mse")
        x = np.zeros((2, 4), "float32")
        optimizer_only.fit(x, x[:, :1], verbose=0)
        optimizer_only.save(tmp_path / "optimizer.keras")

        result = fresh_python(
            """
            import sys, traceback
            import keras
            for name in ("regularizer.keras", "optimizer.keras"):
                try:
                    keras.saving.load_model(name)
                except Exception:
                    traceback.print_exc()
                else:
                    sys.exit(f"{name} loaded without keras_l1")
            assert "keras_l1" not in sys.modules
            """,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert regularizer_line in result.stderr
        assert "keras_l1>ProximalOptimizer" in result.stderr
        # The page quotes the newest Keras; older versions word the message differently.
        if tuple(int(part) for part in keras.version().split(".")[:2]) >= (3, 15):
            assert optimizer_prefix in result.stderr


class TestExactZerosPlot:
    def test_script_runs_and_matches_the_page(self, tmp_path, capsys):
        spec = importlib.util.spec_from_file_location(
            "plot_exact_zeros", DOCS / "scripts" / "plot_exact_zeros.py"
        )
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        output = tmp_path / "exact_zeros.png"
        script.main(["--output", str(output)])
        assert output.read_bytes().startswith(b"\x89PNG")
        # The numbers why-exact-zeros.md states: Keras L1 never reaches a zero, keras_l1
        # reaches Lasso's 4 zeros and its coefficients.
        printed = capsys.readouterr().out
        assert "exact zeros plain=0 proximal=4 lasso=4" in printed
        gap = float(re.search(r"max \|w_proximal - w_lasso\| = (\S+)", printed).group(1))
        assert gap < 1e-5


def _blocks(page: str, language: str) -> list:
    text = (DOCS / page).read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def _table(text: str) -> np.ndarray:
    """The numbers of a printed `RegularizationPath` (percent signs dropped)."""
    rows = [line.replace("%", "").split() for line in text.strip().splitlines()[1:]]
    return np.array(rows, dtype=float)


@pytest.mark.slow
# The page's exact path uses `steps_per_execution`, which Keras's PyTorch trainer refuses.
@pytest.mark.backends("tensorflow", "jax")
class TestChoosingLambdaPage:
    def test_python_blocks_run_in_order_and_print_the_documented_paths(
        self, tmp_path, fresh_python
    ):
        blocks = _blocks("choosing-lambda.md", "python")
        code = "\n".join(blocks) + (
            # What the prose claims about the runs it shows.
            "\nassert network_path.n_selected[-1] > network_path.n_selected[0]"
            "\nassert 0.85 <= history.history['sparsity'][-1] <= 0.95"
            "\nassert exact_path.sparsity[0] == 1.0"
        )
        result = fresh_python(code, cwd=tmp_path, timeout=600)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "regularization_path.png").read_bytes().startswith(b"\x89PNG")

        printed = re.findall(r"^ +l1 .*?(?=^\S|\Z)", result.stdout, flags=re.DOTALL | re.M)
        documented = [block for block in _blocks("choosing-lambda.md", "text") if " l1 " in block]
        assert len(printed) == len(documented) == 2
        approximate, exact = (_table(text) for text in printed)
        # Adam on mini-batches: the same grid, from few features to all of them.
        np.testing.assert_allclose(approximate[:, 0], _table(documented[0])[:, 0], rtol=1e-4)
        assert approximate[0, 4] <= 2 and approximate[-1, 4] == 10
        # The exact path: converged fits, so the documented losses on every machine.
        np.testing.assert_allclose(exact[:, :3], _table(documented[1])[:, :3], rtol=1e-3)


class TestNotebookPages:
    def _hook(self):
        spec = importlib.util.spec_from_file_location(
            "notebooks_hook", DOCS / "extensions" / "notebooks.py"
        )
        hook = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(hook)
        return hook

    @staticmethod
    def _stderr(text: str) -> str:
        return (
            '<div class="jp-OutputArea-child">\n<div class="jp-OutputPrompt jp-OutputArea-prompt">'
            '</div>\n<div class="jp-RenderedText jp-OutputArea-output" '
            f'data-mime-type="application/vnd.jupyter.stderr" tabindex="0">\n<pre>{text}</pre>\n'
            "</div>\n</div>"
        )

    def test_only_tensorflow_start_up_lines_are_dropped_from_stderr(self):
        startup = self._stderr(
            "WARNING: All log messages before absl::InitializeLog() is called are written to "
            "STDERR\nI0000 00:00:1796319156.020273   25462 port.cc:153] oneDNN custom "
            "operations are on.\n"
        )
        warning = self._stderr("UserWarning: the model has no regularized weights\n")
        page = type("Page", (), {"file": type("File", (), {"src_uri": "notebooks/a.ipynb"})})
        html = self._hook().on_page_content(f"<p>a</p>{startup}{warning}", page, None, None)
        assert html == f"<p>a</p>{warning}"

    def test_every_notebook_is_in_the_nav(self):
        config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
        listed = set(re.findall(r"^\s+- (notebooks/\S+\.ipynb)$", config, flags=re.MULTILINE))
        assert listed == {f"notebooks/{path.name}" for path in (ROOT / "notebooks").glob("*.ipynb")}
