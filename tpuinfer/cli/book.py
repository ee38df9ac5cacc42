"""`tpuinfer book --student DIR`: write the book's student edition (answers emptied, checks
that give hints) from the chapter sources in the repository's book/ folder.
`tpuinfer book --html OUT`: write the book as a static site (book/_site.py) from the stored
chapters. `tpuinfer book --serve OUT`: serve a site so written on http://127.0.0.1 (a browser
loads the live planner's WebAssembly over HTTP, not from `file://`).

The chapters are not part of the installed package: they live beside it in a checkout
(`pip install -e .`). Installed any other way, the command says where it looked.
"""
from __future__ import annotations

import functools
import importlib.util
import pathlib
import sys
import time

from ..errors import UsageError
from .options import add_json_flag

BOOK = pathlib.Path(__file__).resolve().parents[2] / "book"
HOST = "127.0.0.1"  # the site is served to this machine only


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
    what.add_argument("--serve", metavar="OUT", type=pathlib.Path,
                      help="serve the site written to OUT on http://127.0.0.1 until Ctrl-C "
                           "(the live planner needs it: browsers load no WebAssembly from "
                           "file://)")
    p.add_argument("--port", type=int, default=8000, help="with --serve (0: any free port)")
    p.add_argument("chapters", nargs="*", help="name prefixes, e.g. 03 (default: all)")
    add_json_flag(p)
    p.set_defaults(func=run)


def site_server(root: pathlib.Path, port: int = 0):
    """An HTTP server (`http.server.ThreadingHTTPServer`) of the static site in `root` on
    127.0.0.1 (`port` 0: a free one), not yet serving (`serve_forever`)."""
    import http.server  # here: it brings ssl and email with it, which no other command needs
    if not (pathlib.Path(root) / "index.html").exists():
        raise UsageError(f"no site in {root} (no index.html); write it first with "
                         f"`tpuinfer book --html {root}`")

    class Handler(http.server.SimpleHTTPRequestHandler):
        # WebAssembly compiles while it streams only when served as application/wasm
        extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                          ".wasm": "application/wasm", ".mjs": "text/javascript",
                          ".js": "text/javascript"}

        def log_message(self, *args):  # a reader's requests are not news
            pass

    try:
        return http.server.ThreadingHTTPServer(
            (HOST, port), functools.partial(Handler, directory=str(root)))
    except OSError as err:
        raise UsageError(f"cannot serve on {HOST}:{port}: {err.strerror}; choose another "
                         f"--port (0: any free one)") from None


def _serve(root: pathlib.Path, port: int):
    server = site_server(root, port)
    url = f"http://{HOST}:{server.server_address[1]}/"
    print(f"tpuinfer book: serving {root} at {url} (Ctrl-C stops)", file=sys.stderr,
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return {"served": str(root), "url": url}, f"stopped serving {root}"


def run(args):
    if args.serve:
        return _serve(args.serve, args.port)
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
            f"{out / 'index.html'}, or serve it for the live planner: tpuinfer book --serve "
            f"{out}")
