"""The built book, opened in a real browser: every page of _toc.yml (the intro, each notebook, the
other pages) is loaded in headless Chromium from the HTML folder and checked in the DOM the browser
rendered, after MathJax has run:

* no error output: no MathJax error (merror), no Python traceback or error-looking stderr in a
  cell output (the build already fails on a raising cell; this also catches what slips through);
* math typeset: a page whose source has $...$ math shows it, and every math element Sphinx wrote
  holds MathJax output (none left as raw TeX, e.g. because MathJax did not load offline);
* figures: each notebook page shows at least one image that is in the build (or a data: PNG);
* no machine paths (a temporary folder, the build checkout, a home folder) in any page;
* the full build: no page ran in fast mode, and chapters 5 and 6 show their sample figures with
  the FID the notebook asserted below its bound, at the chapter's full N (so the figures come
  from the trained weights); QDM_BOOK_FAST=1 accepts a fast build instead;
* screenshots (book/_build/screenshots/<page>.png) of the first chapter and of chapters 5, 6
  and 7, kept as CI artifacts, checked to be real pictures of pages.

The book is built beforehand (`make book`). Without it these tests skip, unless QDM_BOOK_REQUIRED=1
(CI), which makes a missing book or browser a failure. Chromium is Debian's (`make book` installs
it); only subprocess is used, no browser-driver package. QDM_BOOK_HTML and QDM_BOOK_TOC point the
tests at another build and its table of contents (e.g. a small book built while editing).
"""
import json
import os
import re
import signal
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("QDM_BOOK_HTML", ROOT / "book" / "_build" / "html")).resolve()
TOC = Path(os.environ.get("QDM_BOOK_TOC", ROOT / "_toc.yml"))
SCREENSHOTS = HTML.parent / "screenshots"
CHROMIUM = os.environ.get("QDM_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("QDM_BOOK_REQUIRED", "") not in ("", "0")
FAST_BOOK = os.environ.get("QDM_BOOK_FAST", "") not in ("", "0")   # the build under test is a fast one
# A machine's own folders: never in a page (temporary run folders, the build machine's checkout).
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:tmp|work|home|root|Users|private/var|var/folders)/[\w.-]")
# Chapters 5 and 6 print "FID at N = <n>: <fid> (bound <b>)" after asserting fid < b; full N:
SAMPLE_CHAPTERS = {"notebooks/05_training_ema": 64, "notebooks/06_sampling": 64}
SCREENSHOT_PAGES = ["notebooks/05_training_ema", "notebooks/06_sampling", "notebooks/07_evaluation"]
TIMEOUT = 180            # seconds per browser call: generous, the machine may be busy training
# Virtual milliseconds the page may run before the DOM is taken: headless Chromium fast-forwards
# timers, so this costs little real time and lets MathJax finish typesetting.
BUDGET_MS = 30000


# ----------------------------------------------------------------------------------------------
# Pages


def toc_files(entry) -> list[str]:
    """The root and every 'file' of a _toc.yml structure, in order."""
    found = []
    if isinstance(entry, dict):
        for key, value in entry.items():
            found += [value] if key in ("root", "file") else toc_files(value)
    elif isinstance(entry, list):
        for item in entry:
            found += toc_files(item)
    return found


PAGES = toc_files(yaml.safe_load(TOC.read_text()))


def page_id(page: str) -> str:
    return Path(page).name


def source_of(page: str) -> Path | None:
    for suffix in (".ipynb", ".md"):
        if (ROOT / page).with_suffix(suffix).exists():
            return (ROOT / page).with_suffix(suffix)
    return None


def prose(source: Path) -> str:
    """The text MyST parses as Markdown: markdown cells of a notebook, a .md page without its code."""
    if source.suffix == ".ipynb":
        cells = json.loads(source.read_text())["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    else:
        text = source.read_text()
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)    # fenced code
    return re.sub(r"`[^`\n]*`", "", text)                               # inline code


def has_math(source: Path) -> bool:
    """$...$ or $$...$$ (dollarmath) in the page's Markdown."""
    return bool(re.search(r"\$\$.+?\$\$|\$[^$\s][^$\n]*\$", prose(source), flags=re.S))


# ----------------------------------------------------------------------------------------------
# The browser


def require_book():
    if not (HTML / "index.html").exists():
        message = f"no built book at {HTML} (build it with `make book`)"
        if REQUIRED:
            pytest.fail(message + "; QDM_BOOK_REQUIRED is set")
        pytest.skip(message)
    if not os.access(CHROMIUM, os.X_OK):
        message = f"no Chromium at {CHROMIUM} (`make book` installs Debian's chromium)"
        if REQUIRED:
            pytest.fail(message + "; QDM_BOOK_REQUIRED is set")
        pytest.skip(message)


def chromium(*args: str) -> str:
    """Run headless Chromium once with a fresh profile; its stdout. Chromium starts helper
    processes, so it runs in its own process group and the whole group goes on a timeout."""
    with tempfile.TemporaryDirectory(prefix="qdm-chromium-") as profile:
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"Chromium took more than {TIMEOUT} s: {' '.join(cmd)}")
        # Chromium's stderr is noisy (D-Bus, GPU) even when all is well: shown only on failure.
        assert proc.returncode == 0, f"Chromium failed ({proc.returncode}): {' '.join(cmd)}\n{err[-3000:]}"
        return out


def rendered_dom(page: str) -> "Node":
    html = HTML / f"{page}.html"
    assert html.exists(), f"{page} is in {TOC.name} but {html} was not built"
    dom = chromium(f"--virtual-time-budget={BUDGET_MS}", "--dump-dom", html.as_uri())
    assert "</html>" in dom, f"Chromium returned no document for {html}"
    return parse(dom)


# ----------------------------------------------------------------------------------------------
# A minimal DOM (the standard library's parser; the browser's serialisation is well-formed)

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict, parent: "Node | None"):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, test) -> list["Node"]:
        return [n for n in self.iter() if test(n)]

    def __repr__(self) -> str:
        return f"<{self.tag} class={self.attrs.get('class')!r}>{self.text()[:200]!r}"


class TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.node = Node("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.node)
        self.node.children.append(node)
        if tag not in VOID:
            self.node = node

    def handle_endtag(self, tag):
        node = self.node
        while node is not self.root and node.tag != tag:       # tolerate a stray end tag
            node = node.parent
        if node is not self.root:
            self.node = node.parent

    def handle_data(self, data):
        self.node.children.append(data)


def parse(html: str) -> Node:
    builder = TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def is_mathjax_output(n: Node) -> bool:
    """MathJax 2 (CommonHTML, HTML-CSS, SVG output) or MathJax 3 (mjx-container)."""
    return n.tag == "mjx-container" or bool(n.classes & {"MathJax_CHTML", "MathJax", "MathJax_SVG"})


def is_math_error(n: Node) -> bool:
    return (n.tag in ("merror", "mjx-merror") or n.attrs.get("data-mjx-error") is not None
            or bool(n.classes & {"mjx-merror", "MathJax_Error", "merror"}))


# ----------------------------------------------------------------------------------------------
# The tests


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_page_renders(page):
    require_book()
    dom = rendered_dom(page)
    article = (dom.find_all(lambda n: n.tag == "article") or [dom])[0]    # the page, not the menus
    problems = []

    # Errors: MathJax's, and the notebooks' (tracebacks, error outputs, errors written to stderr).
    problems += [f"MathJax error: {n!r}" for n in dom.find_all(is_math_error)]
    outputs = article.find_all(lambda n: "cell_output" in n.classes)
    for out in outputs:
        for n in out.find_all(lambda n: n.classes & {"traceback", "error", "output_error"}):
            problems.append(f"error output: {n!r}")
        for n in out.find_all(lambda n: "stderr" in n.classes):
            if re.search(r"Error\b|Traceback", n.text()):
                problems.append(f"error on stderr: {n!r}")
        if "Traceback (most recent call last)" in out.text():
            problems.append(f"traceback in an output: {out.text()[:300]!r}")

    # Math: present when the source has some, and every math element typeset by MathJax.
    source = source_of(page)
    math = article.find_all(lambda n: "math" in n.classes and n.tag in ("span", "div"))
    if source is not None and has_math(source):
        if not math:
            problems.append(f"{source.name} has $...$ math but the page has no math elements")
    raw = [n for n in math if not any(is_mathjax_output(d) for d in n.iter())]
    if raw:
        problems.append(f"{len(raw)} of {len(math)} math elements not typeset by MathJax "
                        f"(did MathJax load?), first: {raw[0]!r}")

    # Figures: every notebook page shows at least one image that the build holds.
    if page.startswith("notebooks/"):
        images = [img.attrs.get("src", "") for img in article.find_all(lambda n: n.tag == "img")]
        shown = [src for src in images if image_in_build(src, HTML / f"{page}.html")]
        if not shown:
            problems.append(f"no figure: none of the page's {len(images)} images is in the build {images[:5]}")

    # No machine paths anywhere on the page (outputs included).
    problems += [f"machine path: ...{m.string[max(0, m.start() - 60):m.end() + 40]!r}"
                 for m in MACHINE_PATH.finditer(article.text())]

    # The full build: nothing ran in fast mode; chapters 5 and 6 show samples of trained weights.
    if not FAST_BOOK and "fast mode (QDM_FAST=1)" in article.text():
        problems.append("the page ran in fast mode, but the book under test should be the full build")
    if page in SAMPLE_CHAPTERS:
        problems += sample_chapter_problems(page, article)

    assert not problems, f"{page}.html:\n  " + "\n  ".join(problems)


def sample_chapter_problems(page: str, article: "Node") -> list[str]:
    """Chapters 5 and 6: several figures, and the FID their notebook asserted (printed as
    'FID at N = n: fid (bound b)') below its bound at the chapter's full N."""
    problems = []
    figures = [img for img in article.find_all(lambda n: n.tag == "img")
               if image_in_build(img.attrs.get("src", ""), HTML / f"{page}.html")]
    if len(figures) < 3:
        problems.append(f"{len(figures)} figures; a sample chapter shows at least 3")
    found = re.findall(r"FID at N = (\d+): ([\d.]+) \(bound (\d+)\)", article.text())
    if not found:
        problems.append("no 'FID at N = ...' line: the samples were not scored")
    for n, fid, bound in found:
        if float(fid) >= float(bound):
            problems.append(f"FID {fid} at N = {n} is not below its bound {bound}")
        if not FAST_BOOK and int(n) != SAMPLE_CHAPTERS[page]:
            problems.append(f"scored at N = {n}, not the full build's N = {SAMPLE_CHAPTERS[page]}")
    return problems


def image_in_build(src: str, html: Path) -> bool:
    """A data: PNG, or a non-empty image file inside the HTML folder."""
    if src.startswith("data:image/png;base64,"):
        return len(src) > 100
    url = urlsplit(src)
    if url.scheme not in ("", "file"):
        return False                                   # an offline book links no remote image
    path = Path(unquote(url.path)) if url.scheme == "file" else (html.parent / unquote(url.path))
    path = path.resolve()
    return (path.is_relative_to(HTML) and path.suffix.lower() in (".png", ".svg", ".jpg", ".jpeg", ".gif")
            and path.is_file() and path.stat().st_size > 0)


@pytest.mark.parametrize("page", [next(p for p in PAGES if p.startswith("notebooks/")), *SCREENSHOT_PAGES],
                         ids=page_id)
def test_screenshot(page):
    """Notebook pages, photographed: the CI artifacts, and a check that each page is drawn."""
    require_book()
    from PIL import Image                                # matplotlib's dependency

    html = HTML / f"{page}.html"
    assert html.exists(), f"{html} was not built"
    shot = SCREENSHOTS / f"{Path(page).name}.png"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    chromium(f"--virtual-time-budget={BUDGET_MS}", f"--screenshot={shot}", "--window-size=1280,2000",
             html.as_uri())
    assert shot.exists(), f"Chromium wrote no screenshot at {shot}"
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == (1280, 2000), (image.format, image.size)
        # A blank or single-colour page has a handful of colours; text, math and plots have many.
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        n_colours = len(colours) if colours is not None else 1 << 16
    assert n_colours > 100, f"the screenshot {shot} looks empty ({n_colours} colours)"
    assert shot.stat().st_size > 20_000, f"the screenshot {shot} is suspiciously small"
