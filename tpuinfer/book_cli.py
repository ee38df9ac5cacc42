"""`tpuinfer book --student DIR`: write the book's student edition (answers emptied, checks
that give hints) from the chapter sources in the repository's book/ folder.
`tpuinfer book --html OUT`: write the book as a static site (book/_site.py) from the stored
chapters.

The chapters are not part of the installed package: they live beside it in a checkout
(`pip install -e .`). Installed any other way, the command says where it looked.
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys
import time

from .cli import add_json_flag
from .errors import UsageError

BOOK = pathlib.Path(__file__).resolve().parents[1] / "book"


def chapters() -> list[pathlib.Path]:
    """The stored chapters (book/NN_name.ipynb), in order; none outside a checkout."""
    return sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))


def register(sub) -> None:
    p = sub.add_parser("book", help="write the book's student edition (answers emptied) or "
                                    "its static site")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--student", metavar="DIR", type=pathlib.Path,
                      help="folder to write the student's chapters into")
    what.add_argument("--html", metavar="OUT", type=pathlib.Path,
                      help="folder to write the static site into (open OUT/index.html)")
    p.add_argument("chapters", nargs="*", help="name prefixes, e.g. 03 (default: all)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args):
    build = BOOK / "_build.py"
    if not build.exists():
        raise UsageError(f"the book's sources are not beside this installation of tpuinfer "
                         f"(looked for {build}); run this from a checkout of the repository "
                         f"installed with `pip install -e .`, or use "
                         f"`python book/_build.py --student DIR` there")
    if args.html:
        return _write_site(args.html)
    spec = importlib.util.spec_from_file_location("tpuinfer_book_build", build)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.write_student_edition(args.student, args.chapters)
    obj = {"student_edition": str(args.student), "chapters": [p.name for p in written]}
    return obj, f"student edition: {len(written)} chapters and booktools.py in {args.student}"


def _write_site(out: pathlib.Path):
    """Build the static site with book/_site.py (book/ on the path, as its modules expect)."""
    sys.path.insert(0, str(BOOK))
    try:
        import _site  # the checkout's book/, not part of the package: found only at run time
        t0 = time.perf_counter()
        try:
            written = _site.build(out)
        except _site.SiteError as err:
            raise UsageError(str(err)) from None
    finally:
        sys.path.remove(str(BOOK))
    pages = [p.name for p in written]
    return ({"site": str(out), "pages": pages, "seconds": time.perf_counter() - t0},
            f"site: {len(pages)} pages in {out} ({time.perf_counter() - t0:.0f} s); open "
            f"{out / 'index.html'}")
