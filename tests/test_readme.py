"""The API tour (docs/design.md, linked from the README) runs as written and says what it claims."""

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOUR = ROOT / "docs" / "design.md"


def test_readme_links_the_api_tour():
    assert "(docs/design.md)" in (ROOT / "README.md").read_text()


def test_readme_api_tour_runs():
    blocks = re.findall(r"```python\n(.*?)```", TOUR.read_text(), flags=re.S)
    assert blocks, "docs/design.md has no python block"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], "docs/design.md", "exec"), {})
    m = re.search(r"alpha_hat=([\d.]+) cos=([\d.]+)", out.getvalue())
    assert m, out.getvalue()
    assert abs(float(m.group(1)) - 0.8) < 0.01 and float(m.group(2)) > 0.999
