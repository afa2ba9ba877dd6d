"""The documents say only what holds: the README's Quick start runs as written, its links lead somewhere, and the
tables that come from files (presets, benchmarks, measured data) match those files (tools/doc_tables.py)."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# The two smallest example photos (about 0.2 and 0.3 megapixels): the Quick start takes 20-50 s a photo on two cores.
QUICK_START_PHOTOS = ("home.jpg", "friends_by_Aitzol_Berasategi.jpg")


def doc_tables():
    spec = importlib.util.spec_from_file_location("doc_tables", ROOT / "tools" / "doc_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def section(markdown: str, title: str) -> str:
    """The text of the ``## title`` section, up to the next heading of that level."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match[1]


def quick_start_commands() -> list[list[str]]:
    """The commands of the Quick start's first shell block, each split as a shell would (comments dropped)."""
    block = re.search(r"^```sh\n(.*?)^```", section(README.read_text(), "Quick start"), re.M | re.S)
    assert block, "the Quick start has no ```sh block"
    text = block[1].replace("\\\n", " ")
    return [words for line in text.splitlines() if (words := shlex.split(line, comments=True))]


def test_generated_tables_match_their_data(capsys):
    assert doc_tables().main(["--check"]) == 0, capsys.readouterr().out


def test_check_names_a_table_that_no_longer_matches_its_data(tmp_path, capsys):
    tables = doc_tables()
    text = README.read_text()
    assert "<!-- table: strengths -->" in text
    page = tmp_path / "page.md"
    page.write_text(text.replace("| `low` |", "| `low` (changed by hand) |", 1))
    assert tables.main(["--check", str(page)]) == 1
    assert "table strengths differs from its data" in capsys.readouterr().out
    assert tables.main([str(page)]) == 0  # rewritten from the presets
    assert page.read_text() == text
    page.write_text("<!-- table: strengths -->\n| a |\n")
    with pytest.raises(SystemExit, match="without its"):
        tables.main(["--check", str(page)])


def test_the_strengths_table_words_each_promise_as_the_presets_do():
    from scenepriv.settings import PRESETS

    table = section(README.read_text(), "Strength")
    for name, preset in PRESETS.items():
        assert f"| `{name}`" in table and preset.promise in table, name


def test_readme_links_lead_to_files_and_headings():
    text = README.read_text()
    headings = {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
                for title in re.findall(r"^#+ (.+)$", text, re.M)}
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        if path:
            assert (ROOT / path).exists(), f"README.md links to {path}, which does not exist"
        else:
            assert anchor in headings, f"README.md links to #{anchor}, which is no heading of it"


def test_readme_is_a_users_document_of_at_most_3000_words():
    assert len(README.read_text().split()) <= 3000


@pytest.mark.slow
def test_quick_start_runs_as_written(tmp_path):
    """The README's Quick start, command by command, in a folder whose holiday/ holds example photos: each
    command exits 0, with the scenepriv command of this environment."""
    commands = quick_start_commands()
    assert [words[:2] for words in commands] == [["scenepriv", "protect"], ["scenepriv", "verify"]]
    program = Path(sys.executable).with_name("scenepriv")
    if not program.exists():
        program = Path(shutil.which("scenepriv") or "scenepriv")
    assert program.exists(), "the scenepriv command is not installed in this environment (pip install -e .)"
    (tmp_path / "holiday").mkdir()
    for name in QUICK_START_PHOTOS:
        shutil.copy(ROOT / "examples" / "photos" / name, tmp_path / "holiday" / name)
    for words in commands:
        run = subprocess.run([str(program), *words[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, f"{shlex.join(words)} exited {run.returncode}:\n{run.stdout}\n{run.stderr}"
    assert sorted(path.name for path in (tmp_path / "protected").iterdir()) == sorted(QUICK_START_PHOTOS)
