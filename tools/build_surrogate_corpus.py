"""Build the photo folders that surrogates are trained on (corpus) and selected on (tuning) from Debian packages.

    python tools/build_surrogate_corpus.py --set corpus --out CORPUS [--debs DEBS] [--max-side 448]
        [--exclude-like /work/shared/photos]
    python tools/build_surrogate_corpus.py --set tuning --out TUNING --max-side 1024

Reads tools/surrogate_photos.tsv (set, package, path in the package, licence): real photographs chosen by eye
from wallpaper packages (mate-backgrounds, plasma-workspace-wallpapers), OpenCV's documentation (opencv-doc: its
sample data and tutorial pictures, the ones that are photos), darknet's sample data, scikit-image's sample data
(the PyPI package) and Tux Paint's photographic stamps (tuxpaint-stamps-default: objects and animals cut out,
laid here on mid-grey). Each ``.deb`` is fetched with ``apt-get download`` into ``--debs`` unless it is there.
Every photo is turned upright, downsized to ``--max-side`` on its long side and saved as JPEG (quality 92);
``MANIFEST.tsv`` in the output names each file's package, package version, path, licence and the SHA-256 of the
file as packaged. The held-out photos of the transfer measurements (docs/transfer-surrogates.md) are not in the
list, nor the tuning photos in the corpus; ``--exclude-like FOLDER`` also drops any photo whose 32 x 32 grey
thumbnail correlates above 0.9 with one of FOLDER's (a crop or copy of a held-out photo), and says so.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

LIST = Path(__file__).resolve().parent / "surrogate_photos.tsv"


def deb_file(package: str, folder: Path) -> Path:
    """The .deb of ``package`` in ``folder``, fetched with apt-get download when missing."""
    found = sorted(folder.glob(f"{package}_*.deb"))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", package], cwd=folder, check=True, capture_output=True)
        found = sorted(folder.glob(f"{package}_*.deb"))
    return found[-1]


@functools.cache
def data_archive(deb: Path) -> bytes:
    """The data archive (tar) of a .deb, unpacked once."""
    return subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout


def member(deb: Path, path: str) -> bytes:
    """The bytes of ``path`` inside a .deb (dpkg-deb's data archive)."""
    with tarfile.open(fileobj=io.BytesIO(data_archive(deb))) as tar:
        extracted = tar.extractfile("." + path)
        if extracted is None:
            raise SystemExit(f"{deb.name}: {path} is not a regular file")
        return extracted.read()


def thumbnail(image: Image.Image) -> np.ndarray:
    """A 32 x 32 grey thumbnail, zero mean and unit norm, for finding copies and crops."""
    small = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.BOX), dtype=np.float64).ravel()
    small = small - small.mean()
    return small / max(np.linalg.norm(small), 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="corpus", choices=["corpus", "tuning"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--debs", type=Path, default=Path("debs"), help="where the .deb files are (or go)")
    parser.add_argument("--max-side", type=int, default=448)
    parser.add_argument("--exclude-like", type=Path, action="append", default=[])
    args = parser.parse_args()
    rows = [line.split("\t") for line in LIST.read_text().splitlines() if line and not line.startswith("#")]
    excluded = [thumbnail(Image.open(p).convert("RGB")) for folder in args.exclude_like
                for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = ["file\tpackage\tversion\tpath\tlicence\tsha256"]
    for kind, package, path, licence in rows:
        if kind != args.set:
            continue
        if package.startswith("pypi:"):
            import importlib

            module = importlib.import_module(package.removeprefix("pypi:").replace("scikit-image", "skimage"))
            data = (Path(module.__file__).parent / path).read_bytes()
            version = getattr(module, "__version__", "")
        else:
            deb = deb_file(package, args.debs)
            data = member(deb, path)
            version = deb.name.split("_")[1]
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            canvas = Image.new("RGBA", image.size, (128, 128, 128, 255))
            canvas.alpha_composite(image)
            image = canvas
        image = image.convert("RGB")
        if excluded and max(float(thumbnail(image) @ other) for other in excluded) > 0.9:
            print(f"dropped (like a photo of --exclude-like): {package} {path}", file=sys.stderr)
            continue
        image.thumbnail((args.max_side, args.max_side), Image.Resampling.LANCZOS)
        stem = Path(path).stem if "/contents/images/" not in path else path.split("/")[-4]
        name = f"{package.removeprefix('pypi:')}__{stem}.jpg"
        image.save(args.out / name, quality=92)
        manifest.append("\t".join([name, package, version, path, licence, hashlib.sha256(data).hexdigest()]))
    (args.out / "MANIFEST.tsv").write_text("\n".join(manifest) + "\n")
    print(f"{len(manifest) - 1} photos in {args.out}")


if __name__ == "__main__":
    main()
