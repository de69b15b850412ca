"""Serve MathJax from the built book itself, so that math renders offline.

Sphinx's default ``mathjax_path`` is a CDN URL, fetched when a page is *viewed*: offline (and in
the headless-browser test, tests/test_book.py) the math stays raw TeX. This extension copies the
part of an *installed* MathJax 2.7 (Debian's ``libjs-mathjax``: /usr/share/javascript/mathjax)
that the ``TeX-AMS_CHTML`` configuration loads into ``_static/mathjax/`` of the HTML output at the
end of each build; book/_config.yml points ``mathjax_path`` there. Nothing of MathJax is
committed, and the HTML folder is self-contained: it renders math wherever it is opened.

Configuration (book/_config.yml, ``sphinx: config:``):
    offline_mathjax_source: the installed MathJax folder (default /usr/share/javascript/mathjax).
A missing MathJax is a warning (an error under ``-W``) that says how to install it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

# What TeX-AMS_CHTML needs: the loader, its combined configuration file, the TeX input and
# CommonHTML output jax (font data are loaded on demand), the MathML element jax (operator
# dictionary), the extensions TeX autoloads (\boldsymbol, \color, menus ...), the localisations
# (loaded by browser language) and the TeX web fonts. About 4 MB of the package's 54 MB
# (which also holds the unpacked sources, the SVG output and other fonts).
PARTS = ["MathJax.js", "config/TeX-AMS_CHTML.js", "jax/input/TeX", "jax/element",
         "jax/output/CommonHTML", "extensions", "localization",
         "fonts/HTML-CSS/TeX/woff", "fonts/HTML-CSS/TeX/otf"]


def _source(app) -> Path:
    return Path(app.config.offline_mathjax_source)


def check_source(app) -> None:
    if app.builder.format == "html" and not (_source(app) / "MathJax.js").is_file():
        logger.warning("offline_mathjax: no MathJax at %s: the pages' math will not render. "
                       "Install it (`apt-get install libjs-mathjax`, or `make book`) or set "
                       "offline_mathjax_source.", _source(app), type="offline_mathjax")


def copy_mathjax(app, exception) -> None:
    """At the end of a successful HTML build (after Sphinx has copied its own static files)."""
    if exception is not None or app.builder.format != "html":
        return
    src = _source(app)
    if not (src / "MathJax.js").is_file():
        return                                       # already warned in check_source
    dest = Path(app.outdir) / "_static" / "mathjax"
    for part in PARTS:
        # Follow symbolic links (a packaging may link the fonts from elsewhere): copy the files.
        if (src / part).is_dir():
            shutil.copytree(src / part, dest / part, dirs_exist_ok=True, symlinks=False)
        else:
            (dest / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / part, dest / part)
    logger.info("offline_mathjax: copied MathJax from %s to %s", src, dest)


def setup(app):
    app.add_config_value("offline_mathjax_source", "/usr/share/javascript/mathjax", "html")
    app.connect("builder-inited", check_source)
    app.connect("build-finished", copy_mathjax)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
