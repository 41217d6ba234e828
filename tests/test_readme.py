"""The README's API tour runs as written and says what it claims."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_tour_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python block"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], "README.md", "exec"), {})
    m = re.search(r"alpha_hat=([\d.]+) cos=([\d.]+)", out.getvalue())
    assert m, out.getvalue()
    assert abs(float(m.group(1)) - 0.8) < 0.01 and float(m.group(2)) > 0.999
