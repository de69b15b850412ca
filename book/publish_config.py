"""The published book's configuration: book/_config.yml with the repository filled in.

    python book/publish_config.py https://github.com/OWNER/NAME [BRANCH]

writes book/_config.published.yml (git-ignored): the repository's URL and branch, which the
launch buttons (Colab, Binder) and the repository button need, and those buttons switched on. The
GitHub Pages workflow (.github/workflows/book.yml) runs it with the repository it runs in, so no
URL is written into the sources; a local build uses book/_config.yml, where the URL is empty and
the buttons are off (sphinx-book-theme cannot draw a launch button without a repository).
"""
import sys
from pathlib import Path

import yaml

BOOK = Path(__file__).resolve().parent
LAUNCH = {"binderhub_url": "https://mybinder.org", "colab_url": "https://colab.research.google.com"}


def published(config: dict, url: str, branch: str = "main") -> dict:
    """``config`` with the repository and the launch and repository buttons set."""
    if not url.startswith("https://"):
        raise SystemExit(f"not a repository URL: {url!r}")
    out = {**config, "repository": {**config.get("repository", {}), "url": url, "branch": branch}}
    out["launch_buttons"] = {**config.get("launch_buttons", {}), **LAUNCH}
    out["html"] = {**config.get("html", {}), "use_repository_button": True}
    return out


def main(argv: list[str]) -> None:
    if not 1 <= len(argv) <= 2:
        raise SystemExit(__doc__)
    config = yaml.safe_load((BOOK / "_config.yml").read_text())
    target = BOOK / "_config.published.yml"
    target.write_text(yaml.safe_dump(published(config, *argv), sort_keys=False))
    print(f"wrote {target.relative_to(BOOK.parent)} for {argv[0]}")


if __name__ == "__main__":
    main(sys.argv[1:])
