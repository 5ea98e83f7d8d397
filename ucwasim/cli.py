"""Command line: ``ucwasim serve`` runs the simulator until interrupted.

Configuration comes from a YAML/JSON file, overridden by the command-line flags.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import replace
from types import FrameType

from ucwasim.config import SimConfig, parse_user_arg
from ucwasim.errors import ConfigError
from ucwasim.simulator import Simulator

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ucwasim", description="UCWA 2.0 server simulator")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the simulator over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--public-url",
        help="base URL written into absolute links, e.g. http://ucwasim:8090 behind a container "
        "network (default: the bound address)",
    )
    serve.add_argument("--config", help="YAML or JSON file with SimConfig fields")
    serve.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="SIP:PASSWORD[:BEHAVIOUR]",
        help="add a user, e.g. sip:bot@contoso.com:secret (repeatable)",
    )
    serve.add_argument("--domain")
    serve.add_argument("--time-scale", type=float)
    serve.add_argument("--latency-ms", type=int)
    serve.add_argument("--redirect", action="store_true", help="root answers with a redirect")
    serve.add_argument("--token-lifetime", type=float, help="seconds (before time scale)")
    serve.add_argument("--max-apps", type=int, help="applications per user")
    serve.add_argument(
        "--tls",
        action="store_true",
        help="serve https with a certificate from a generated test CA",
    )
    serve.add_argument(
        "--ca-out",
        metavar="PATH",
        help="with --tls: where to write the test CA certificate (default: a temporary file)",
    )
    serve.add_argument(
        "--http-port",
        type=int,
        help="with --tls: plain-http port that redirects autodiscovery to https (default: any)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=float,
        help="seconds before an idle kept-alive connection is closed (default 120, as IIS)",
    )
    serve.add_argument("--no-gzip", action="store_true", help="never compress answers")
    return parser


def load_config(args: argparse.Namespace) -> SimConfig:
    cfg = SimConfig.from_file(args.config) if args.config else SimConfig()
    users = list(cfg.users) + [parse_user_arg(u) for u in args.user]
    overrides: dict[str, object] = {"users": users}
    for flag, field in (
        ("domain", "domain"),
        ("time_scale", "time_scale"),
        ("latency_ms", "latency_ms"),
        ("token_lifetime", "token_lifetime"),
        ("max_apps", "max_applications_per_user"),
        ("idle_timeout", "http_idle_timeout"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides[field] = value
    if args.redirect:
        overrides["redirect"] = True
    if args.no_gzip:
        overrides["gzip"] = False
    return replace(cfg, **overrides)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.tls and (args.ca_out or args.http_port is not None):
        # Silently ignored, they would leave a client waiting for a CA file or a port.
        print("ucwasim: configuration error: --ca-out and --http-port need --tls", file=sys.stderr)
        return EXIT_CONFIG
    try:
        cfg = load_config(args)
    except (ConfigError, OSError) as exc:
        print(f"ucwasim: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    sim = Simulator(cfg)
    try:
        sim.start(
            args.host,
            args.port,
            args.public_url,
            tls=args.tls,
            ca_path=args.ca_out,
            http_port=args.http_port or 0,
        )
    except ConfigError as exc:
        print(f"ucwasim: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"ucwasim: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"ucwasim serving {sim.base_url}; discovery URL {sim.discovery_url}", flush=True)
    if sim.ca_path is not None:
        print(f"  test CA certificate: {sim.ca_path}", flush=True)
        print(f"  plain http (redirects autodiscovery to https): {sim.plain_url}", flush=True)
    for user in cfg.users:
        print(f"  user {user.sip} ({user.behaviour})", flush=True)
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stopped.wait()
    sim.stop()
    return 0
