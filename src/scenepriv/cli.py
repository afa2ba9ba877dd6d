"""The command line: ``scenepriv protect``, ``verify``, ``classify``, ``models``, ``evaluate``, ``serve``. It parses;
:mod:`scenepriv.commands` calls the library and shows what happened.

PyTorch and the image libraries are imported inside the commands, so ``--help``, ``--version`` and
``models`` answer at once. Exit status: 0 when everything asked for was done (every photo protected,
every check held), 1 when some photo or check failed (each named on an ``error:`` line), 2 for a
usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from fractions import Fraction

from . import __version__
from .commands import (
    INTERRUPTED,
    Console,
    command_classify,
    command_evaluate,
    command_models,
    command_protect,
    command_serve,
    command_verify,
)
from .settings import (
    DEFAULT_STRENGTH,
    METHODS,
    PRECISIONS,
    PRESETS,
    RESAMPLERS,
    RESIZE_POLICIES,
    STRENGTHS,
    ScenePrivError,
)
from .zoo import DEFAULT_MODEL, MODELS, places365

# --- option types: every number is checked, and the message names the option (argparse adds it) --------------------


def _number(text: str) -> float:
    """A decimal or a fraction such as ``1/255``."""
    try:
        value = float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _in_range(low: float, high: float, *, open_low: bool = False):
    def parse(text: str) -> float:
        value = _number(text)
        if not (low < value if open_low else low <= value) or value > high:
            raise argparse.ArgumentTypeError(f"must lie in {'(' if open_low else '['}{low:g}, {high:g}], got {text!r}")
        return value

    return parse


def _whole(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {f'from {low} to {high}' if high else f'>= {low}'}, got {text}")
        return value

    return parse


def _list_of(parse):
    def parse_list(text: str) -> list:
        values = [parse(part) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError("give at least one value")
        return values

    return parse_list


def _one_of(choices):
    def parse(text: str) -> str:
        if text.strip() not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        return text.strip()

    return parse


def _resamplers(text: str) -> list[str]:
    return list(RESAMPLERS) if text == "all" else _list_of(_one_of(RESAMPLERS))(text)


JPEG_QUALITY = _whole(1, 100)
MODEL = _one_of(list(MODELS))
MODEL_NAMES = _list_of(MODEL)
SCALE = _in_range(0, 8, open_low=True)


# --- the parser -----------------------------------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; wider option column."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    verbosity = group.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity", default=0,
                           help="print only errors and warnings")
    verbosity.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity",
                           help="also print the settings and model in use")


def _model_options(parser: argparse.ArgumentParser, precision: str = "fp32", batch_size: str | None = None,
                   ensemble: bool = False) -> None:
    """``precision``: the default of ``--precision``; protect takes ``auto`` (speed), the commands that
    measure take ``fp32``, the network as published, whatever the machine. ``batch_size``: what a
    ``--batch-size`` counts, for the commands that batch. ``ensemble``: ``--model`` takes several."""
    model = parser.add_argument_group("model")
    if ensemble:
        model.add_argument("--model", default=[DEFAULT_MODEL], type=MODEL_NAMES, metavar="NAME[,NAME...]",
                           help=f"classifier to protect against (default {DEFAULT_MODEL}, embedded); several, "
                                f"comma-separated, protect against all of them at once (from: {', '.join(MODELS)})")
    else:
        model.add_argument("--model", default=DEFAULT_MODEL, type=MODEL, metavar="NAME",
                           help=f"classifier to ask (default {DEFAULT_MODEL}, embedded; from: {', '.join(MODELS)})")
    model.add_argument("--weights", metavar="PATH", help="a local checkpoint file instead of the default weights")
    model.add_argument("--mirror", metavar="URL",
                       help="download Places365 weights from this folder URL instead of the official server (the "
                            f"checksum stays pinned; or set {places365.URL_ENV})")
    model.add_argument("--resize", default="auto", choices=["auto", *RESIZE_POLICIES],
                       help="how the classifier brings a photo to its input size (default auto: bilinear-antialias "
                            "for full-size output, the paper's bilinear otherwise)")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                       help="where to compute (default auto: cuda when there is one, else cpu)")
    speed.add_argument("--precision", default=precision, choices=list(PRECISIONS),
                       help="bf16 autocast: 2-3x faster where the CPU or GPU runs bf16 natively; auto: bf16 "
                            f"only there (default {precision})")
    speed.add_argument("--fold-batch-norm", action=argparse.BooleanOptionalAction, default=True,
                       help="fold batch norms into convolutions: the same function to float rounding, faster "
                            "(default on)")
    if batch_size:
        speed.add_argument("--batch-size", type=_whole(1), default=8,
                           help=f"{batch_size} protected together (default 8)")


PROTECT_EXAMPLES = """examples:
  scenepriv protect holiday/ -o protected/                 protect every photo of a folder (holds through a
                                                           site's JPEG re-encoding and resizing)
  scenepriv protect holiday/ -o protected/ --strength low  least visible, for files shared as they are
  scenepriv verify protected/ --original holiday/          check the protection after re-encoding
  find . -name '*.heic' | scenepriv protect - -o out/      paths from stdin

Outputs replace files of the same name in OUTDIR. Exit status: 0 when every photo was protected,
1 when a photo failed or was saved without reaching its goal (each on an error: line), 2 for an
invalid option, 130 when interrupted."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scenepriv", formatter_class=_Formatter,
        description="Protect the scene of photos from automatic classifiers (Private FGSM, ICASSP 2019).",
        epilog="examples:\n  scenepriv protect photos/ -o protected/\n"
               "  scenepriv verify protected/ --original photos/\n\nrun 'scenepriv COMMAND --help' for its options")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("protect", help="protect photos (files or folders) into an output folder",
                            description="Protect photos: each is saved to OUTDIR with a perturbation that changes "
                                        "what the classifier sees.",
                            epilog=PROTECT_EXAMPLES, formatter_class=_Formatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="photos or folders of photos; - reads paths from stdin")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the protected photos")
    p.add_argument("--strength", choices=list(STRENGTHS),
                   help="; ".join(f"{name}: {preset.promise}" for name, preset in PRESETS.items()))
    p.add_argument("--robust", action="store_true",
                   help="also hold through a site's re-encoding at any strength: confirmed on the file and on "
                        "real JPEG 50, 75 and 95, at full and half size through every resampler (medium and high have "
                        "it)")
    p.add_argument("--seed", type=_whole(0), help="make target choice reproducible (default: unpredictable)")
    p.add_argument("--recursive", action="store_true", help="also take photos in sub-folders")
    p.add_argument("--report", metavar="FILE.jsonl",
                   help="append one JSON record per photo to this file (- : JSON lines on stdout)")
    p.add_argument("--compare", metavar="DIR",
                   help="also write, per photo, a PNG to look at before sharing: the most changed 256x256 crop at "
                        "100%% (original | protected, labelled), and below it the whole photo with that crop boxed")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout (messages on stderr)")
    p.add_argument("--format", default="auto", choices=["auto", "png", "jpeg"],
                   help="output format; auto (default): a JPEG for a JPEG, HEIC, WebP or AVIF photo (a file you can "
                        "upload, the protection checked on that file), a PNG for a lossless one and at --strength "
                        "low")
    p.add_argument("--quality", type=JPEG_QUALITY,
                   help="JPEG quality 1-100 of JPEG outputs (default: the photo's own, within 85-95; 90 for a photo "
                        "that was not a JPEG)")
    p.add_argument("--keep-metadata", action="store_true",
                   help="keep EXIF metadata except location (default: strip all; a valid colour profile is kept)")
    p.add_argument("--size", default="full", choices=["full", "model"],
                   help="output at the photo's own size (default) or at the model's input size (the paper's setting)")
    _output_options(p)
    method = p.add_argument_group("method (each given here wins over the --strength preset)")
    method.add_argument("--method", default="p-fgsm", choices=list(METHODS), help="default p-fgsm")
    method.add_argument("--eps", type=_in_range(0, 1),
                        help="step size in [0, 1] pixel units, e.g. 0.004 or 1/255 (the paper's: 0.007)")
    method.add_argument("--max-iter", type=_whole(0), help="most iterations of the iterative methods (default 50)")
    method.add_argument("--threshold", type=_in_range(0, 1),
                        help="target probability that stops the iterations (default 0.99)")
    method.add_argument("--sigma", type=_in_range(0, 1),
                        help="P-FGSM's cumulative-probability threshold (default 0.99)")
    method.add_argument("--iterations", type=_whole(0), help="fixed number of repeated steps (sog, fgsm, r-fgsm)")
    method.add_argument("--max-perturbation", type=_in_range(0, 1),
                        help="optional L-infinity bound around the original, in [0, 1] pixel units")
    _model_options(p, precision="auto", batch_size="photos", ensemble=True)
    cluster = p.add_argument_group("many photos (a Ray cluster; pip install 'scenepriv[cluster]')")
    cluster.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                         help="protect on a Ray cluster: auto (alone) joins the one RAY_ADDRESS or 'ray start' names, "
                              "else starts one here; or host:6379, ray://host:10001. INPUT and OUTDIR may then be "
                              "s3://, gs:// or hdfs:// URIs; photos already in --report are skipped")
    cluster.add_argument("--workers", type=_whole(1), metavar="N",
                         help="workers, each holding the model(s) once (default 1)")
    cluster.add_argument("--gpus-per-worker", type=_in_range(0, 64), metavar="N",
                         help="GPUs each worker takes, e.g. 1 or 0.5 (default 0: CPU)")
    p.set_defaults(run=command_protect)

    v = commands.add_parser("verify", help="check that protected files stay protected after re-encoding",
                            formatter_class=_Formatter,
                            description="Re-classify protected photos as saved and after real JPEG re-encoding and "
                                        "resizing. Exit status 1 when any check fails (like sha256sum -c).")
    v.add_argument("files", nargs="+", metavar="FILE", help="protected photos or folders of them; - reads stdin")
    v.add_argument("--original", metavar="DIR", help="folder of the originals (same names, any extension)")
    v.add_argument("--strength", choices=list(PRESETS), default=DEFAULT_STRENGTH,
                   help=f"check what this strength promises (default {DEFAULT_STRENGTH}: as saved and after JPEG "
                        "50, 75 and 95 at scales 0.5 and 1, every resampler; low, paper, transfer: as saved, through "
                        "the classifier's own resize); the three options below choose other checks")
    v.add_argument("--jpeg", type=_list_of(JPEG_QUALITY), help="JPEG qualities 1-100 to re-encode with")
    v.add_argument("--scale", type=_list_of(SCALE), help="scales to resize by before JPEG, in (0, 8]")
    v.add_argument("--resamplers", type=_resamplers, help=f"all, or some of {','.join(RESAMPLERS)}")
    v.add_argument("--recursive", action="store_true", help="also take files in sub-folders")
    v.add_argument("--models", type=MODEL_NAMES, default=[], metavar="NAME[,NAME...]",
                   help="also judge on these models, e.g. ones the photos were not protected against")
    v.add_argument("--json", action="store_true", help="print every check as JSON")
    _output_options(v)
    _model_options(v)
    v.set_defaults(run=command_verify)

    c = commands.add_parser("classify", help="what the classifier sees in photos", formatter_class=_Formatter)
    c.add_argument("images", nargs="+", metavar="IMAGE", help="photos or folders; - reads paths from stdin")
    c.add_argument("--top", type=_whole(1), default=5, help="how many classes to show (default 5)")
    c.add_argument("--recursive", action="store_true", help="also take photos in sub-folders")
    c.add_argument("--json", action="store_true", help="print JSON instead of a list")
    _output_options(c)
    _model_options(c)
    c.set_defaults(run=command_classify)

    m = commands.add_parser("models", help="the classifiers available and where their weights are")
    m.add_argument("--json", action="store_true", help="print JSON instead of a list")
    _output_options(m)
    m.set_defaults(run=command_models)

    e = commands.add_parser("evaluate", help="reproduce the paper's Table 1, Table 2 and Fig. 3 on a dataset",
                            formatter_class=_Formatter,
                            description="Reproduce the paper's tables on any classifier and image set (needs the "
                                        "eval extra: pip install 'scenepriv[eval]').")
    e.add_argument("dataset", metavar="DATASET",
                   help="class folders (CLASS_NAME/photo.jpg), a Places365 val folder with places365_val.txt, "
                        "or a flat folder of unlabelled photos (label = clean top-1)")
    e.add_argument("-o", "--output", required=True, metavar="RESULTS_DIR", help="folder for results and tables")
    e.add_argument("--methods", default="paper",
                   help="'paper' (the eleven rows of Table 1) or comma-separated methods or row names, "
                        "e.g. 'fgsm,r-fgsm,p-fgsm' or 'FG (6I),P-FG' (default paper)")
    e.add_argument("--limit", type=_whole(1), help="evaluate only the first N images (class folders: taken in turn)")
    e.add_argument("--seed", type=_whole(0), help="make target choice reproducible (default: unpredictable)")
    e.add_argument("--private-classes", action="store_true",
                   help="keep only the 60 private classes of MediaEval 2018 (Places365 models)")
    e.add_argument("--save-images", action="store_true", help="also write the protected images as PNG")
    e.add_argument("--transfer-to", type=MODEL_NAMES, default=[], metavar="NAME[,NAME...]",
                   help="also report the top-1/top-5 accuracy of these models, not protected against, in Table 1")
    _output_options(e)
    _model_options(e, batch_size="images")
    e.set_defaults(run=command_evaluate)

    s = commands.add_parser("serve", help="a web page on this computer: drop photos, protect, check, download",
                            formatter_class=_Formatter,
                            description="Serve a web page where photos are dropped, protected as by 'protect' (PNG, "
                                        "no metadata),\ncompared before/after, checked after JPEG re-encoding and "
                                        "resizing, and downloaded.\nPhotos stay in a temporary folder, deleted once "
                                        "downloaded, after 30 minutes, or when the\nserver stops. Ctrl+C stops it.")
    s.add_argument("--port", type=_whole(0, 65535), default=8765, help="port to listen on (default 8765; 0: any free)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this computer only; any other is warned about)")
    s.add_argument("--strength", choices=list(STRENGTHS), default=DEFAULT_STRENGTH,
                   help=f"the strength the page starts with (default {DEFAULT_STRENGTH})")
    s.add_argument("--max-upload-mb", type=_in_range(0, 100_000, open_low=True), default=50,
                   help="the largest photo the page takes, in MB (default 50)")
    _output_options(s)
    _model_options(s, precision="auto", ensemble=True)
    s.set_defaults(run=command_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    # Pillow's own warnings ("Corrupt EXIF data", two lines naming no photo): load_photo says what matters per file.
    warnings.filterwarnings("ignore", module=r"PIL\.")
    machine_stdout = getattr(args, "json", False) or getattr(args, "report", None) == "-"
    if getattr(args, "json", False) and getattr(args, "report", None) == "-":
        parser.error("--json and --report - would both write to stdout; choose one")
    console = Console(args.verbosity, machine_stdout=machine_stdout)
    try:
        return args.run(args, console)
    except ScenePrivError as error:  # a user's problem, said in one line; a bug keeps its traceback
        console.error(str(error))
        return 1
    except KeyboardInterrupt:
        console.error("interrupted")
        return INTERRUPTED
    except BrokenPipeError:  # `scenepriv classify ... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
