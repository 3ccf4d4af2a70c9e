"""`ssgan studio`: the region-editing web page (needs the optional extra: pip install "ssgan[studio]")."""
import argparse
import importlib.util
import socket
import sys


def run_studio(args):
    from ssgan.studio import INSTALL_HINT, Studio, launch

    if args.port is not None:  # before anything is loaded: gradio's own error is a traceback
        check_port_free(args.host, args.port)
    if importlib.util.find_spec("gradio") is None:  # before loading a model that could not be shown
        print(f"ssgan studio: error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    studio = Studio.from_checkpoint(args.ckpt, device=args.device, psi=args.psi, seed=args.seed)
    launch(studio, host=args.host, port=args.port)


def port_number(text):
    """argparse type: a TCP port, 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range: ports run from 1 to 65535")
    return port


def check_port_free(host, port):
    """ValueError (exit 2) when host:port cannot be served on, before any model is loaded."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise ValueError(f"port {port} is in use on {host}: pass --port another ({e.strerror})") from None


def register(sub):
    from ssgan.model_cli import MODEL_HELP, nonnegative_float

    p = sub.add_parser("studio", help="edit samples and photos region by region in the browser (Gradio)")
    p.add_argument("--ckpt", required=True, help=MODEL_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=None, help="port (default: the first free one from 7860)")
    p.add_argument("--device", default=None, help="torch device (default cuda when available, else cpu)")
    p.add_argument("--psi", type=nonnegative_float, default=0.7, help="truncation of the samples (default 0.7)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first sample (default 0)")
    p.set_defaults(run=run_studio)
