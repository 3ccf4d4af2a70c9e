"""`ssgan prepare ...`: write training data as a self-contained `datasets` folder (save_to_disk)."""
from pathlib import Path


def register(sub):
    prepare = sub.add_parser("prepare", help="prepare a training dataset (a save_to_disk folder)")
    kinds = prepare.add_subparsers(dest="dataset", required=True, metavar="DATASET")

    celeba = kinds.add_parser("celebamask-hq", help="raw CelebAMask-HQ -> train/validation DatasetDict, 13 classes")
    celeba.add_argument("raw_dir", metavar="RAW_DIR", help="folder with CelebA-HQ-img/ and CelebAMask-HQ-mask-anno/")
    celeba.add_argument("out", metavar="OUT", help="output folder (must not exist or be empty)")
    celeba.add_argument("--size", type=int, default=512, help="output resolution (default 512)")
    celeba.add_argument("--num-proc", type=int, default=None, help="worker processes (default 1)")
    celeba.set_defaults(run=run_celebamask)

    builtin = kinds.add_parser("builtin", help="the procedural demo faces (7 classes) with exact masks")
    builtin.add_argument("out", metavar="OUT", help="output folder (must not exist or be empty)")
    builtin.add_argument("--num-images", type=int, default=2000, help="number of images (default 2000)")
    builtin.add_argument("--size", type=int, default=64, help="resolution (default 64)")
    builtin.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    builtin.set_defaults(run=run_builtin)


def run_celebamask(args):
    from ssgan.train.data import prepare_celebamask_hq

    counts = prepare_celebamask_hq(args.raw_dir, args.out, size=args.size, num_proc=args.num_proc)
    size = f"{args.size}x{args.size}"
    print(f"wrote {counts['train']} train and {counts['val']} validation images at {size} to {args.out}")
    return 0


def run_builtin(args):
    from ssgan.train.builtin import generate_builtin
    from ssgan.train.data import DataError

    from ssgan.io import atomic_directory

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"output folder {out} already exists and is not empty")
    with atomic_directory(out) as tmp:
        generate_builtin(args.num_images, args.size, args.seed).save_to_disk(str(tmp))
    print(f"wrote {args.num_images} builtin faces at {args.size}x{args.size} (seed {args.seed}) to {out}")
    return 0
