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
    celeba.add_argument("--strict", action="store_true", help="fail (writing nothing) when an image has no usable "
                        "part masks or a part file is empty, instead of skipping it")  # fmt: skip
    celeba.set_defaults(run=run_celebamask)

    builtin = kinds.add_parser("builtin", help="the procedural demo faces (7 classes) with exact masks")
    builtin.add_argument("out", metavar="OUT", help="output folder (must not exist or be empty)")
    builtin.add_argument("--num-images", type=int, default=2000, help="number of images (default 2000)")
    builtin.add_argument("--size", type=int, default=64, help="resolution (default 64)")
    builtin.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    builtin.set_defaults(run=run_builtin)

    check = sub.add_parser(
        "check-data", help="check every image and label map of a dataset; print per-class pixels and presence",
        description="Decode every row of a dataset as training would, list every bad file at once (unreadable or "
        "truncated files, image/mask size mismatches, masks that are not label maps, label maps stored lossily, label "
        "values >= the class count, images without a mask and masks without an image, with --size images of another "
        "size) and print a per-class table of pixels and presence. Exits 1 when a row is bad.",
    )  # fmt: skip
    check.add_argument("data", metavar="PATH", help="a dataset: a folder (images/ + masks/, or save_to_disk), "
                       "'hf:<id>' or 'builtin:N'")  # fmt: skip
    check.add_argument("--classes", default=None, metavar="NAMES|K",
                       help="the model's classes, as for `ssgan train`: comma-separated names (class 0 first) or a "
                       "count K; label values >= K are errors (default: the data's class names, if recorded in "
                       "id2label.json)")  # fmt: skip
    check.add_argument("--size", type=int, default=None, help="the model's resolution (a power of two): images of "
                       "another size are errors, as `ssgan train` refuses them without --resize")  # fmt: skip
    check.add_argument("--allow-lossy-masks", action="store_true",
                       help="accept label maps stored as JPEG, lossy WebP...")  # fmt: skip
    check.add_argument("--image-only", action="store_true", help="a dataset of images without label maps")
    check.add_argument("--workers", type=int, default=None, help="decoding threads (default: CPU count, at most 8)")
    check.add_argument("--cache", default=None, help="cache folder (default $SSGAN_CACHE or ~/.cache/ssgan)")
    check.set_defaults(run=run_check)


def run_celebamask(args):
    from ssgan.train.data import abbreviated, prepare_celebamask_hq

    counts = prepare_celebamask_hq(args.raw_dir, args.out, size=args.size, num_proc=args.num_proc, strict=args.strict)
    size = f"{args.size}x{args.size}"
    print(f"wrote {counts['train']} train and {counts['val']} validation images at {size} to {args.out}")
    skipped, empty, no_parts = counts["skipped"], counts["empty_parts"], counts["no_parts"]
    if no_parts:
        print(f"skipped {len(no_parts)} images with no part masks: ids {abbreviated(no_parts)}")
    for i in sorted(skipped):
        print(f"skipped image {i}: {skipped[i]}")
    if empty:
        print(f"ignored {len(empty)} empty part files: {abbreviated(empty, 10)}")
    return 0


def run_builtin(args):
    from ssgan.train.builtin import BUILTIN_CLASSES, generate_builtin
    from ssgan.train.data import DataError, write_class_names

    from ssgan.io import atomic_directory

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"output folder {out} already exists and is not empty")
    with atomic_directory(out) as tmp:
        generate_builtin(args.num_images, args.size, args.seed).save_to_disk(str(tmp))
        write_class_names(tmp, BUILTIN_CLASSES)
    print(f"wrote {args.num_images} builtin faces at {args.size}x{args.size} (seed {args.seed}) to {out}")
    return 0


def run_check(args):
    from ssgan.train.builtin import default_cache_dir
    from ssgan.train.check import check_dataset, error_file_for
    from ssgan.train.data import DataError, load_source
    from ssgan.train.loop import TrainOptions, model_config

    cache_dir = Path(args.cache) if args.cache else default_cache_dir()
    # --classes and --size checked as `ssgan train` checks them (SSGConfig's rules), with the same messages
    given = model_config(TrainOptions(data=args.data, classes=args.classes)) if args.classes is not None else None
    if args.size is not None and (args.size < 4 or args.size & (args.size - 1)):
        raise ValueError(f"invalid SSGConfig: size={args.size} must be a power of two >= 4")
    hf, class_names = load_source(args.data, args.size or 64, args.image_only, cache_dir=cache_dir)
    num_classes = given.num_classes if given is not None else (len(class_names) if class_names else None)
    if args.image_only:
        num_classes = class_names = None
    report = check_dataset(hf, mask_column=None if args.image_only else "mask", cache_dir=cache_dir,
                           workers=args.workers)  # fmt: skip
    sizes = sorted({tuple(size) for size in report.image_sizes if size is not None})
    shown = ", ".join(f"{w}x{h}" for w, h in sizes[:4]) + (f" and {len(sizes) - 4} more" if len(sizes) > 4 else "")
    kind = "images" if args.image_only else "image/label-map pairs"
    print(f"{args.data}: {report.rows} {kind}; image sizes {shown or 'none readable'}")
    if not args.image_only:
        recorded = ", ".join(class_names) if class_names else "not recorded (no id2label.json)"
        print(f"label values 0..{report.num_labels - 1}; class names: {recorded}")
        if class_names and given is not None and given.num_classes != len(class_names):
            print(f"note: --classes {args.classes} ({given.num_classes} classes) differs from the "
                  f"{len(class_names)} recorded class names")  # fmt: skip
            class_names = None
        names_given = given is not None and not class_names and not str(args.classes).strip().isdigit()
        print(report.table(given.class_names if names_given else class_names, num_classes))
    try:
        report.raise_errors(num_classes, args.allow_lossy_masks, error_file_for(hf, cache_dir),
                            classes_named=class_names is not None, size=args.size, resize=False,
                            size_hint="`ssgan train` refuses it unless given --resize, which resizes and "
                            "centre-crops it")  # fmt: skip
    except DataError as e:
        print(f"error: {e}")
        return 1
    print("no problems found")
    return 0
