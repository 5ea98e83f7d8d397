"""The API's gunicorn, in an interpreter of its own: ``ucwa-bridge api`` replaces itself with
``python -m bridge.serve_api <gunicorn arguments>``.

gevent must patch the standard library before anything imports ``ssl``, ``socket`` or
``threading``; in the process that validated the settings they are long imported (and a late
patch warns and may leave modules with the unpatched classes). So this module patches first and
only then imports gunicorn, which imports the application in its workers.

Like every role it prints only log lines: a bad gunicorn setting is one line naming it and exit
78, and whatever gunicorn or a library prints instead of logging becomes a log line too.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from typing import NoReturn  # noqa: E402

from gunicorn.app.wsgiapp import WSGIApplication  # noqa: E402

from bridge.cli import setup_logging  # noqa: E402
from bridge.config.gevent_redis import use_os_poll_for_idle_checks  # noqa: E402
from bridge.config.settings import CONFIG_EXIT_CODE  # noqa: E402
from bridge.observability.logging import capture_stray_output  # noqa: E402

log = logging.getLogger("ucwa_bridge.api")

# gunicorn puts the traceback of a class it could not import inside its message, in brackets.
_PASTED_TRACEBACK = re.compile(r"\s*\[(Traceback \(most recent call last\):\n.*?)\]\s*$", re.S)
# Settings gunicorn resolves only once the master runs, where a failure is printed, not logged.
_RESOLVED_LATE = {"bind": "address", "worker_class": "worker_class", "logger_class": "logger_class"}


class BridgeApplication(WSGIApplication):
    """gunicorn's WSGI application, whose bad settings stop the start with one log line naming
    the setting and exit 78, instead of gunicorn's printed ``Error:`` text and exit 1."""

    def load_default_config(self) -> None:
        super().load_default_config()
        make_parser = self.cfg.parser

        def parser() -> argparse.ArgumentParser:
            # argparse prints its usage and exits 2; an exception here reaches load_config.
            built: argparse.ArgumentParser = make_parser()
            built.error = _refuse  # type: ignore[method-assign]
            return built

        self.cfg.parser = parser

    def load_config(self) -> None:
        try:
            super().load_config()
            validate = getattr(self.cfg, "validate", None)  # gunicorn 27: settings as a whole
            if validate is not None:
                validate()
        except Exception as exc:
            # The arguments come from ``ucwa-bridge api``; what else gunicorn reads is this.
            source = "GUNICORN_CMD_ARGS" if "GUNICORN_CMD_ARGS" in os.environ else "gunicorn"
            config_error(source, exc)
        for setting, attribute in _RESOLVED_LATE.items():
            try:
                value = getattr(self.cfg, attribute)
                if setting == "bind":
                    _check_ports(value)
            except Exception as exc:
                config_error(setting, exc)


def config_error(setting: str, exc: BaseException) -> NoReturn:
    """One line, ``configuration error: SETTING: problem`` (a traceback gunicorn pasted into
    the problem goes to ``exc_info``), and exit 78."""
    problem = str(exc).strip()
    pasted = _PASTED_TRACEBACK.search(problem)
    if pasted is not None:
        traceback = pasted.group(1).strip()
        problem = f"{problem[: pasted.start()].rstrip()} {traceback.splitlines()[-1]}\n{traceback}"
    log.error("configuration error: %s: %s", setting, problem, extra={"setting": setting})
    raise SystemExit(CONFIG_EXIT_CODE)


def _refuse(message: str) -> NoReturn:
    raise ValueError(message)


def _check_ports(addresses: list[object]) -> None:
    for address in addresses:
        if isinstance(address, tuple) and not 0 <= address[1] <= 65535:
            raise ValueError(f"port {address[1]} is out of range (0-65535)")


def main(argv: list[str]) -> None:
    setup_logging("api")
    capture_stray_output()
    use_os_poll_for_idle_checks()  # before gunicorn forks its workers
    sys.argv = ["gunicorn", *argv]
    BridgeApplication("%(prog)s [OPTIONS] [APP_MODULE]").run()


if __name__ == "__main__":
    main(sys.argv[1:])
