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


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (ValueError, KeyError, FileNotFoundError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"ssgan {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
