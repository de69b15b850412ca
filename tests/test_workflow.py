"""The GitHub Pages workflow (.github/workflows/book.yml) cannot run here: its YAML is parsed and
checked against Jupyter Book 1's documented recipe (check out, set up Python, install, build,
upload-pages-artifact, deploy-pages; Pages permissions), and the configuration it builds with is
checked to carry the repository URL it is given while the committed one names none."""
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
sys.path.insert(0, str(ROOT / "book"))
from publish_config import published  # noqa: E402


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_triggers_and_pages_permissions():
    flow = workflow()
    triggers = flow.get("on", flow.get(True))            # YAML 1.1 reads a bare `on` as True
    assert triggers["push"]["branches"] == ["main"] and "workflow_dispatch" in triggers
    assert flow["permissions"]["pages"] == "write" and flow["permissions"]["id-token"] == "write"


def test_steps_follow_the_documented_recipe():
    (job,) = workflow()["jobs"].values()
    assert job["runs-on"].startswith("ubuntu") and job["environment"]["name"] == "github-pages"
    steps = job["steps"]
    uses = [s["uses"].split("@")[0] for s in steps if "uses" in s]
    assert uses == ["actions/checkout", "actions/setup-python", "actions/upload-pages-artifact",
                    "actions/deploy-pages"]
    runs = [s["run"] for s in steps if "run" in s]
    assert runs[0] == "make install"
    assert "book/publish_config.py" in runs[1] and "${{ github.repository }}" in runs[1]
    assert runs[2].startswith("make book ") and "BOOK_CONFIG=book/_config.published.yml" in runs[2]
    order = [s.get("uses", s.get("run", "")).split("@")[0] for s in steps]
    assert order.index(runs[2]) < order.index("actions/upload-pages-artifact")
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "book/_build/html"
    deploy = next(s for s in steps if s.get("uses", "").startswith("actions/deploy-pages"))
    assert deploy["id"] == "deployment" and "steps.deployment.outputs.page_url" in job["environment"]["url"]


def test_the_published_config_has_the_repository_the_committed_one_none():
    committed = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())
    assert committed["repository"]["url"] == ""
    assert not committed["launch_buttons"]["colab_url"] and not committed["launch_buttons"]["binderhub_url"]
    config = published(committed, "https://github.com/someone/qdm", "main")
    assert config["repository"] == {**committed["repository"], "url": "https://github.com/someone/qdm",
                                    "branch": "main"}
    assert config["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")
    assert config["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    rest = {k: v for k, v in config.items() if k not in ("repository", "launch_buttons", "html")}
    assert rest == {k: v for k, v in committed.items() if k not in ("repository", "launch_buttons", "html")}


def test_publish_config_writes_the_file_the_workflow_builds_with(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "book" / "publish_config.py"), "https://github.com/a/b"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    written = yaml.safe_load((ROOT / "book" / "_config.published.yml").read_text())
    assert written["repository"]["url"] == "https://github.com/a/b"
