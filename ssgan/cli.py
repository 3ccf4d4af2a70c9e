"""The `ssgan` command line. Each group of subcommands lives in its own module with a `register(sub)`.

The command line is the top layer: it is the one place in `ssgan` that may load `ssgan.train`.
"""
import argparse
import importlib
import sys

COMMAND_MODULES = (
    "ssgan.model_cli", "ssgan.editing_cli", "ssgan.studio_cli", "ssgan.train.cli", "ssgan.train.data_cli",
)  # fmt: skip


def build_parser():
    parser = argparse.ArgumentParser(prog="ssgan", description="SemanticStyleGAN: train, convert, generate, edit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(sub)
    return parser


def _plain_warning(message, category, filename, lineno, line=None):
    """Warnings as the command line prints them: "warning: message", without the source file and code line."""
    return f"warning: {message}\n"


def _show_warning(message, category, filename, lineno, file=None, line=None):
    try:
        (file or sys.stderr).write(_plain_warning(message, category, filename, lineno))
    except OSError:  # stderr gone: nothing to tell
        pass


def main(argv=None):
    import warnings

    try:
        args = build_parser().parse_args(argv)  # imports the command modules (torch...): seconds
    except KeyboardInterrupt:
        print("ssgan: interrupted (SIGINT)", file=sys.stderr)
        return 130
    formatwarning, showwarning = warnings.formatwarning, warnings.showwarning
    warnings.formatwarning, warnings.showwarning = _plain_warning, _show_warning
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:  # Ctrl-C before a command handles it (imports, opening the data): one line, no trace
        print(f"ssgan {args.command}: interrupted (SIGINT)", file=sys.stderr)
        return 130
    except (ValueError, KeyError, FileNotFoundError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"ssgan {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning, warnings.showwarning = formatwarning, showwarning


if __name__ == "__main__":
    sys.exit(main())
