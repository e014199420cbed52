"""The `evsed` command: its parser and the exit codes. Each command's code is imported only when
that command runs, so `evsed status` costs little more than the interpreter's own start.

Config errors and missing packages exit with status 2 and say what to do; no traceback.
"""

from __future__ import annotations

import os
import sys

from evsed import __version__

EXIT_FAILURE, EXIT_CONFIG = 1, 2
CONFIG_HELP = "config file (default: $EVSED_CONFIG, else /etc/evsed/evsed.toml)"

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (2 ms of `evsed status`)
if TYPE_CHECKING:
    import argparse
    from typing import Any, Callable
    Command = Callable[[argparse.Namespace], int]
    Options = Callable[[argparse.ArgumentParser], object]


def _lazy(target: str) -> Command:
    """A command's function, "module:function" under evsed.cli, imported when it runs."""
    def run(args: argparse.Namespace) -> int:
        func: Command = _load(target)
        return func(args)
    return run


def _load(target: str) -> Callable[..., int]:
    module, _, name = target.partition(":")
    func: Callable[..., int] = getattr(_module(module), name)
    return func


# The modules that register commands of their own (add_commands) and the commands each registers:
# a command's parser imports only its module (each costs `evsed status` a few tenths of a ms).
COMMAND_MODULES = {"status": ("status", "reserve", "clear-faults", "sim"), "records": ("sessions", "report", "export"),
                   "policy": ("mode", "reload", "cards"), "ops": ("install", "uninstall", "update")}


def _module(name: str) -> Any:
    """evsed.cli.`name`, imported (by the import statement's own function: importlib costs 0.1 ms)."""
    __import__(f"evsed.cli.{name}")
    return sys.modules[f"evsed.cli.{name}"]


def _formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's help layout at the terminal's width, as argparse finds it, without the 2 ms of
    importing shutil (and bz2, lzma) that argparse spends on it for every command."""
    import argparse
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 80
        except (OSError, ValueError):
            columns = 80
    return argparse.HelpFormatter(prog, width=max(columns, 20) - 2)


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `evsed` parser; with `only`, just that command's options are built (a command's parser
    costs about a millisecond: all of them, more than the interpreter's start)."""
    import argparse
    p = argparse.ArgumentParser(prog="evsed", description="Controller daemon for a stand-alone EV charger.",
                                formatter_class=_formatter)
    p.add_argument("--version", action="version", version=f"evsed {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: str | Command, help_: str, options: str | Options | None = None) -> None:
        """One command. `func` a function or "module:function" under evsed.cli, imported when it
        runs; `options(subparser)` adds its options, a function, or "module:function" for a command
        whose module is heavy to import: imported only when that command is the one parsed (the
        whole parser, for `evsed --help` and `--version`, parses no command's options)."""
        if only is not None and name != only:
            return
        sp = sub.add_parser(name, help=help_, description=help_, formatter_class=_formatter)
        sp.add_argument("-c", "--config", metavar="FILE", help=CONFIG_HELP)
        sp.set_defaults(func=_lazy(func) if isinstance(func, str) else func)
        if isinstance(options, str):
            if only == name:
                _load(options)(sp)
        elif options is not None:
            options(sp)

    add("run", "run:cmd_run", "run the daemon")
    add("check", "run:cmd_check", "validate the config and open every configured device once (while the daemon "
        "runs: validate only, and show what the daemon reads)",
        lambda sp: sp.add_argument("--json", action="store_true", help="the report as JSON"))
    add("probe", "probe:cmd_probe", "find the serial ports, an OpenEVSE board, Modbus meters, a card reader and "
        "the GPIO pilot, and print a TOML block for them", "probe:add_options")
    add("service", "run:cmd_service", "run one service process (ocpp, mqtt, web, prices) beside the daemon",
        lambda sp: sp.add_argument("name", choices=("ocpp", "mqtt", "web", "prices"), help="the service: its "
                                   "[section] of the config"))
    for module, names in COMMAND_MODULES.items():  # each light to import: their work is imported when it runs
        if only is None or only in names:
            _module(module).add_commands(add)
    add("plan", "plan:cmd_plan", "charge an energy by a time in the cheapest hours; cancel it; show every plan",
        "plan:add_options")
    if only is not None and only not in sub.choices:  # not a command: the whole parser says so
        return parser()
    return p


def _config_error() -> type[Exception]:
    """Imported when an exception gets this far, as below."""
    from evsed.errors import ConfigError
    return ConfigError


def _daemon_errors() -> tuple[type[Exception], ...]:
    """No daemon, or it refused (a Failure), or a value out of the protocol's bounds: said in one
    line. Imported here, not at the top: `evsed --version` and the records commands never need them."""
    from evsed.control.client import ControlError
    from evsed.protocol_types import DaemonError
    from evsed.wire import WireError
    return ControlError, DaemonError, WireError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--version"]:  # answered before any parser is built: it needs none (argparse is 2 ms)
        print(f"evsed {__version__}")
        return 0
    args = parser(argv[0] if argv and not argv[0].startswith("-") else None).parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except _config_error() as exc:  # evaluated only when an exception gets this far
        print(f"evsed: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `evsed sessions | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except _daemon_errors() as exc:  # evaluated only when an exception gets this far
        print(f"evsed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:  # a state or runtime directory that cannot be made or used
        print(f"evsed: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
