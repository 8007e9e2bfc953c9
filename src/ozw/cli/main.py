"""The ``ozw`` command line: run the worker, inspect or start a config, a local server.

Exit codes: 0 ok, 1 the worker could not start, 2 usage or configuration error,
130 stopped by a second Ctrl-C. Every error is one ``ozw: error: ...`` line on
stderr, never a traceback: usage errors from argparse included, and whatever a
command raises, exception groups and all (:mod:`ozw.cli.exit_status`).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import traceback
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Final, NoReturn, TextIO

from ozw.cli.exit_status import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    TRACEBACK_ENV,
    outcome_of,
)
from ozw.config import (
    API_KEY_ENV,
    BACKEND_NAMES,
    ConfigError,
    WorkerConfig,
    add_config_flags,
    dump_config,
    load_config,
    overrides_from_args,
    parse_duration,
    starter_config,
)
from ozw.config.rules import address
from ozw.dev.sidecar_image import DEFAULT_TAG as DEFAULT_SIDECAR_TAG
from ozw.strict import Invalid

DEFAULT_CONFIG_OUTPUT: Final = "config/worker.toml"
DEV_API_KEY_ENV: Final = "OZW_DEV_API_KEY"
DEFAULT_DEV_API_KEY: Final = "dev-key"

SMOKE_IGNORES: Final = frozenset(
    {"api_key", "websocket_url", "proxy_url", "metrics_addr", "max_tasks", "once"}
)
"""Configuration flags ``ozw smoke`` has no use for."""
CHECK_IGNORES: Final = frozenset({"log_level", "max_tasks", "once"})
"""Configuration flags ``ozw check`` has no use for (it logs errors only)."""


def _version() -> str:
    try:
        return metadata.version("ozw")
    except metadata.PackageNotFoundError:  # running from a tree that was never installed
        return "unknown"


def _print_warnings(config: WorkerConfig) -> None:
    for line in config.warnings:
        print(f"ozw: warning: {line}", file=sys.stderr)


def _error(message: str) -> int:
    print(f"ozw: error: {message}", file=sys.stderr)
    return EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one ``ozw: error:`` line, like every other error."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"ozw: error: {message} (see `{self.prog} --help`)\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Room for the long flag names, so their help stays on their line."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=36)


# --------------------------------------------------------------------------- parser


def _add_output_flags(parser: argparse.ArgumentParser, default: str) -> None:
    """``--output`` / ``--force`` of the commands that write a config file."""
    parser.add_argument(
        "--output",
        "-o",
        default=default,
        metavar="PATH",
        help="where to write it, '-' = stdout (default: %(default)s)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")


def build_parser() -> argparse.ArgumentParser:
    """The ``ozw`` argument parser (``ozw [flags]`` is rewritten to ``ozw run [flags]``)."""
    parser = _Parser(
        prog="ozw",
        description="Self-hosted worker for Oz cloud agents.",
        epilog="`ozw [flags]` is `ozw run [flags]`; see `ozw run --help` for the flags.",
    )
    parser.add_argument("--version", action="version", version=f"ozw {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the worker (the default)",
        description="Run the worker until stopped. SIGINT/SIGTERM: stop taking work, cancel "
        "the running tasks, tear down, report, exit 0; a second one kills at once (exit 130). "
        "SIGQUIT: drain (no new work, running tasks finish, exit 0). SIGHUP: ignored.",
    )
    add_config_flags(run)

    config = commands.add_parser("config", help="show or create a configuration file")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = config_commands.add_parser(
        "show",
        help="print the effective configuration",
        description="Print the configuration the flags and file give, as TOML (no API key).",
    )
    add_config_flags(show)
    init = config_commands.add_parser(
        "init", help="write a commented starter file", description="Write a starter config file."
    )
    init.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        default="docker",
        help="backend of the starter file (default: %(default)s)",
    )
    _add_output_flags(init, DEFAULT_CONFIG_OUTPUT)
    summary = "convert a Go oz-agent-worker YAML config to ozw TOML"
    details = f"{summary[0].upper()}{summary[1:]}; keys with no equivalent yet become comments."
    imported = config_commands.add_parser("import", help=summary, description=details)
    imported.add_argument("file", metavar="FILE.yaml", help="the Go worker's config file")
    _add_output_flags(imported, "-")

    demo = commands.add_parser(
        "demo",
        help="see the worker run sample tasks locally (nothing to set up)",
        description="Start a local dispatch server and a direct-backend worker with the "
        "stand-in agent, send sample tasks and show their outcomes.",
    )
    demo.add_argument("--log-file", metavar="PATH", help="append the worker's log here")
    demo.add_argument(
        "--metrics-addr", metavar="HOST:PORT", help="serve /metrics and /healthz here"
    )

    smoke = commands.add_parser(
        "smoke",
        help="run one task with a real configuration against an embedded server (CI)",
        description="Run one assignment through the configured backend; exit 0 only "
        "if it completed.",
    )
    # The embedded server needs no key, URL or proxy, and one task is the whole run.
    add_config_flags(smoke, without=SMOKE_IGNORES)
    smoke.add_argument(
        "--task", metavar="FILE.json", help="assignment data to run (default: a built-in sample)"
    )
    smoke.add_argument(
        "--timeout",
        default="10m",
        metavar="DURATION",
        help="fail the task after this, as a task_timeout (default: %(default)s)",
    )
    smoke.add_argument(
        "--image", metavar="IMAGE", help="run the task in this image (docker; air-gapped sites)"
    )
    smoke.add_argument(
        "--sidecar-image",
        metavar="IMAGE",
        help="mount the agent from this sidecar image (docker; default: the one Oz names)",
    )

    check = commands.add_parser(
        "check",
        help="validate the configuration and the backend's prerequisites",
        description="One line per check; non-zero exit on any failure.",
    )
    add_config_flags(check, without=CHECK_IGNORES)

    dev = commands.add_parser(
        "dev-server",
        help="run a local dispatch server for trying the worker",
        description="A local dispatch server speaking the worker protocol (Ctrl-C stops it).",
    )
    dev.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    dev.add_argument(
        "--port",
        type=int,
        default=8765,
        help="port to listen on, 0 = any free (default: %(default)s)",
    )
    dev.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"key workers must present (default: ${DEV_API_KEY_ENV} or {DEFAULT_DEV_API_KEY!r})",
    )
    dev.add_argument(
        "--assignments",
        metavar="FILE.jsonl",
        help="assignments and cancellations to send, one JSON line each (- = typed on stdin)",
    )
    dev.add_argument("--record", metavar="FILE.jsonl", help="append every worker message here")

    sidecar = commands.add_parser(
        "dev-sidecar-image",
        help="build a stand-in agent sidecar image, to try docker offline",
        description="Import a one-file image whose /entrypoint.sh stands in for the agent "
        '(docs/backends.md, "Trying docker offline"); no registry needed.',
    )
    sidecar.add_argument(
        "--tag", default=DEFAULT_SIDECAR_TAG, help="the image's name (default: %(default)s)"
    )
    return parser


def normalise_argv(argv: Sequence[str]) -> list[str]:
    """``ozw`` and ``ozw --flag ...`` mean ``ozw run ...``; help and version stay global.

    A value that looks like a negative number or duration joins its option
    (``--timeout -1s`` → ``--timeout=-1s``): argparse would read it as an unknown option
    and say only "expected one argument", where the option's own check names the problem.
    """
    args: list[str] = []
    for arg in argv:
        option = args[-1] if args else ""
        takes_value = option.startswith("--") and option != "--" and "=" not in option
        if takes_value and _NEGATIVE.match(arg):
            args[-1] = f"{option}={arg}"
        else:
            args.append(arg)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help", "--version")):
        return ["run", *args]
    return args


_NEGATIVE: Final = re.compile(r"-\.?\d")


# --------------------------------------------------------------------------- commands


def _load(
    args: argparse.Namespace, environ: Mapping[str, str], *, require_worker_id: bool = True
) -> WorkerConfig:
    overrides = overrides_from_args(args)
    return load_config(args.config, overrides, environ, require_worker_id=require_worker_id)


FIRST_STEPS: Final = (
    "nothing to run: no --config and no --worker-id. New here? `ozw demo` shows the worker "
    f"at work; `ozw config init` writes {DEFAULT_CONFIG_OUTPUT}, then "
    f"`ozw --config {DEFAULT_CONFIG_OUTPUT}`"
)


def cmd_run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Load the configuration, check the API key, set up logging and run the worker."""
    if args.config is None and args.worker_id is None:
        return _error(FIRST_STEPS)
    try:
        config = _load(args, environ)
    except ConfigError as exc:
        return _error(str(exc))
    if not config.api_key:
        return _error(f"no API key: pass --api-key KEY or set {API_KEY_ENV}")
    from ozw.link.proxy import ProxySettingError, choose_proxy

    try:
        choose_proxy(config.server.websocket_url, config.server.proxy_url, environ)
    except ProxySettingError as exc:
        return _error(str(exc))
    from ozw.telemetry.logs import configure_logging

    configure_logging(config.log_level, config.log_format)
    for line in config.warnings:
        logging.getLogger("ozw.config").warning("%s", line)
    # Imported late so `ozw --help` and config errors stay fast and independent of Trio.
    from ozw import worker

    return worker.run(config)


def cmd_config_show(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    """Print the effective configuration as TOML (the API key only as set / not set)."""
    try:
        config = _load(args, environ, require_worker_id=False)
    except ConfigError as exc:
        return _error(str(exc))
    out.write(dump_config(config))
    return EXIT_OK


def _write_config(text: str, args: argparse.Namespace, out: TextIO, done: str) -> int:
    """Write ``text`` to ``--output`` (``-`` = ``out``), keeping a file unless ``--force``."""
    if args.output == "-":
        out.write(text)
        return EXIT_OK
    path = Path(args.output)
    if path.exists() and not args.force:
        return _error(f"{path} exists; pass --force to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"ozw: error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"wrote {path}; {done}", file=sys.stderr)
    return EXIT_OK


def cmd_config_init(args: argparse.Namespace, out: TextIO) -> int:
    """Write a commented starter file; refuse to overwrite one unless ``--force``."""
    done = f"({args.backend} backend) edit worker_id before running"
    return _write_config(starter_config(args.backend), args, out, done)


def cmd_config_import(args: argparse.Namespace, out: TextIO) -> int:
    """Write the ozw TOML equivalent of a Go worker's YAML config."""
    from ozw.config.go_import import GoConfigError, convert

    try:
        with open(args.file, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        return _error(f"{args.file}: no such file")
    except (OSError, UnicodeDecodeError) as exc:
        return _error(f"{args.file}: cannot read: {getattr(exc, 'strerror', None) or exc}")
    try:
        converted = convert(text, args.file)
    except GoConfigError as exc:
        return _error(f"{args.file}: {exc}")
    return _write_config(converted, args, out, f"check it with `ozw check --config {args.output}`")


def cmd_dev_server(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run the local dispatch server (``ozw.dev.server``) until Ctrl-C."""
    if not 0 <= args.port <= 65535:
        return _error(f"--port: {args.port} is not a port number (0-65535)")
    if args.api_key is not None and not args.api_key.strip():
        return _error("--api-key: must not be empty")
    api_key = args.api_key or environ.get(DEV_API_KEY_ENV) or DEFAULT_DEV_API_KEY
    from ozw.dev.command import serve_cli

    return serve_cli(
        host=args.host,
        port=args.port,
        api_key=api_key,
        assignments=args.assignments,
        record=args.record,
    )


def cmd_sidecar_image(args: argparse.Namespace, out: TextIO) -> int:
    """Build the stand-in agent sidecar image (``ozw.dev.sidecar_image``)."""
    from ozw.dev.sidecar_image import SidecarImageError, build_sidecar_image

    try:
        image_id = build_sidecar_image(args.tag)
    except SidecarImageError as exc:
        print(f"ozw: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"built {args.tag} ({image_id[:19]}): a stand-in agent sidecar", file=out)
    print(
        f"try it: ozw smoke --config FILE --image <a local image with /bin/sh> "
        f"--sidecar-image {args.tag}",
        file=out,
    )
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the self-contained demo (``ozw.dev.demo``)."""
    from ozw.dev.demo import demo_main

    if args.metrics_addr is not None:
        try:
            address(args.metrics_addr)
        except Invalid as exc:
            return _error(f"--metrics-addr: {exc}")
    return demo_main(log_path=args.log_file, metrics_addr=args.metrics_addr)


def cmd_smoke(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run one task through the configured backend against an embedded dispatch server."""
    try:
        timeout = parse_duration(args.timeout)
    except ValueError as exc:
        return _error(f"--timeout: {exc}")
    if timeout <= 0:
        return _error(f"--timeout: {args.timeout!r} is not more than 0")
    try:
        # The embedded server needs no Oz account: any API key will do.
        config = load_config(
            args.config, overrides_from_args(args), {**environ, API_KEY_ENV: "smoke"}
        )
    except ConfigError as exc:
        return _error(str(exc))
    from ozw.cli.smoke import ImageOverrides, smoke_main
    from ozw.telemetry.logs import configure_logging

    _print_warnings(config)
    configure_logging(config.log_level, config.log_format)
    images = ImageOverrides(image=args.image, sidecar_image=args.sidecar_image)
    return smoke_main(config, task_file=args.task, timeout=timeout, images=images)


def cmd_check(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Validate the configuration and the backend's prerequisites, one line per check."""
    try:
        config = _load(args, environ)
    except ConfigError as exc:
        return _error(str(exc))
    from ozw.cli.check import check_main
    from ozw.telemetry.logs import configure_logging

    _print_warnings(config)
    configure_logging("error", config.log_format)
    return check_main(config, environ)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ozw``; returns the exit code (also for ``--help`` and usage errors)."""
    parser = build_parser()
    try:
        args = parser.parse_args(normalise_argv(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse has printed help, the version or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _dispatch(args, os.environ)
    except SystemExit:
        raise
    except BaseException as exc:  # the edge: a group, Ctrl-C, a bug: never a traceback by default
        code, line = outcome_of(exc)
        if line is not None:
            if os.environ.get(TRACEBACK_ENV):
                traceback.print_exception(exc)
            print(line, file=sys.stderr)
        return code


def _dispatch(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    match args.command:
        case "run":
            return cmd_run(args, environ)
        case "config" if args.config_command == "show":
            return cmd_config_show(args, environ, sys.stdout)
        case "config" if args.config_command == "import":
            return cmd_config_import(args, sys.stdout)
        case "config":
            return cmd_config_init(args, sys.stdout)
        case "dev-server":
            return cmd_dev_server(args, environ)
        case "dev-sidecar-image":
            return cmd_sidecar_image(args, sys.stdout)
        case "demo":
            return cmd_demo(args)
        case "smoke":
            return cmd_smoke(args, environ)
        case "check":
            return cmd_check(args, environ)
    return _error("no command given (see `ozw --help`)")


if __name__ == "__main__":
    sys.exit(main())
