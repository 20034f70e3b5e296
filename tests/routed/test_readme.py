"""The README's routed-flow examples run as shown."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from flowstream.core.workflow import load_workflow
from flowstream.routed import Flow

README = Path(__file__).resolve().parents[2] / "README.md"


def section() -> str:
    text = README.read_text()
    return text[text.index("## Routed flows") :]


def test_the_python_example_runs() -> None:
    [code] = re.findall(r"```python\n(.*?)```", section(), re.S)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.result == {"user": "alice"}  # type: ignore[attr-defined]
    assert result.path == ["check", "welcome"]  # type: ignore[attr-defined]


def test_the_file_example_runs() -> None:
    [text] = re.findall(r"```yaml\n(.*?)```", section(), re.S)
    flow = Flow.from_workflow(load_workflow(textwrap.dedent(text), "yaml"))
    assert flow.run().result == 3
