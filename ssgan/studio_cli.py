"""`ssgan studio`: the region-editing web page (needs the optional extra: pip install "ssgan[studio]")."""
import importlib.util
import sys


def run_studio(args):
    from ssgan.studio import INSTALL_HINT, Studio, launch

    if importlib.util.find_spec("gradio") is None:  # before loading a model that could not be shown
        print(f"ssgan studio: error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    studio = Studio.from_checkpoint(args.ckpt, device=args.device, psi=args.psi, seed=args.seed)
    launch(studio, host=args.host, port=args.port)


def register(sub):
    p = sub.add_parser("studio", help="edit samples and photos region by region in the browser (Gradio)")
    p.add_argument("--ckpt", required=True, help="checkpoint: ssgan .safetensors or an original SemanticStyleGAN .pt")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default: the first free one from 7860)")
    p.add_argument("--device", default=None, help="torch device (default cuda when available, else cpu)")
    p.add_argument("--psi", type=float, default=0.7, help="truncation of the samples (default 0.7)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first sample (default 0)")
    p.set_defaults(run=run_studio)
