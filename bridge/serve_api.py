"""The API's gunicorn, in an interpreter of its own: ``ucwa-bridge api`` replaces itself with
``python -m bridge.serve_api <gunicorn arguments>``.

gevent must patch the standard library before anything imports ``ssl``, ``socket`` or
``threading``; in the process that validated the settings they are long imported (and a late
patch warns and may leave modules with the unpatched classes). So this module patches first and
only then imports gunicorn, which imports the application in its workers.
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from gunicorn.app.wsgiapp import run  # noqa: E402


def main(argv: list[str]) -> None:
    sys.argv = ["gunicorn", *argv]
    run()


if __name__ == "__main__":
    main(sys.argv[1:])
