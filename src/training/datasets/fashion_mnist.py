"""Fashion-MNIST (the default dataset, conf/data/fashion_mnist.yaml): find it, check it, read it once.

The data is found in this order: an explicit `data.root`; the project's own copy in `data/`; the Debian
package's files (`dataset-fashion-mnist`), decompressed once into `data/`; torchvision's download.
`.gz` files are decompressed once next to them, and read compressed where that folder cannot be written (a
read-only dataset folder needs no writable copy). Every read error is a DatasetNotFoundError (or the
DatasetCorruptError it has) naming the file and the cause, so it is never taken for a run folder that cannot be
written.
The four IDX files are read here directly (a header, then raw bytes): importing torchvision cost more than
reading them, so a run imports it only to download. What was read is kept for the rest of the process, so the jobs
of an in-process sweep read and check the files once.
`python -m src.training.datasets.fashion_mnist` prepares it (what `make setup` runs) and says where it is.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import math
import os
import zlib
from collections import OrderedDict
from pathlib import Path

import torch

from src import REPO_ROOT
from src.config.rules import BOOLEAN, FOLDER, Rule
from src.runs.errors import error_reason
from src.training.data import DatasetCorruptError, DatasetInfo, DatasetNotFoundError, DeviceData

log = logging.getLogger(__name__)

PROJECT_DATA_DIR = REPO_ROOT / "data"
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"

INFO = DatasetInfo(train_size=60_000, num_classes=10, input_shape=(1, 28, 28))
KEY_RULES: dict[str, Rule] = {
    "data.root": FOLDER.optional(),
    "data.system_dir": FOLDER.optional(),
    "data.download": BOOLEAN,
    **INFO.size_rules(),
    "data.normalize": BOOLEAN,
}
RAW = Path("FashionMNIST", "raw")  # torchvision's layout below a root
HOW_TO_GET_IT = (
    "Get Fashion-MNIST in one of these ways:\n"
    "  - Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist   (then nothing else to do)\n"
    "  - with internet access: leave data.download=true and the files are downloaded into data/\n"
    "  - by hand: put the four files (train-images-idx3-ubyte, ... , .gz or not) in\n"
    "    <dir>/FashionMNIST/raw/ and run with data.root=<dir>"
)


# The official uncompressed files: (number of items, SHA-256). MNIST has the very same sizes, hence the checksum.
OFFICIAL = {
    "train-images-idx3-ubyte": (60_000, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train-labels-idx1-ubyte": (60_000, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "t10k-images-idx3-ubyte": (10_000, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "t10k-labels-idx1-ubyte": (10_000, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
RAW_FILES = tuple(OFFICIAL)
IDX_UBYTE_MAGIC = b"\x00\x00\x08"  # two zero bytes, then the type code of unsigned bytes
PIXEL_MEAN, PIXEL_STD = 0.2860, 0.3530  # of the training images, scaled to [0, 1]
# Each file's shape after the item count: images are 28x28, labels scalars.
ITEM_SHAPES = {name: (INFO.input_shape[1:] if "images" in name else ()) for name in OFFICIAL}


def _sources(root: Path) -> dict[str, Path] | None:
    """Where each of the four files is below `root`: uncompressed in `FashionMNIST/raw/`, else its `.gz` there or in
    `root` itself; None when any is missing. Anything of that name counts (a folder, a dangling link), so reading it
    names it instead of calling the dataset missing."""
    raw = root / RAW
    found = {}
    for name in RAW_FILES:
        candidates = (raw / name, raw / f"{name}.gz", root / f"{name}.gz")
        found[name] = next((path for path in candidates if os.path.lexists(path)), None)
    return found if all(found.values()) else None


def _where(sources: dict[str, Path]) -> str:
    """The folder (or folders) the four files are read from, for messages."""
    return " and ".join(sorted({str(path.parent) for path in sources.values()}))


def _decompress(sources: dict[str, Path], root: Path) -> bool:
    """Write the `.gz` files of `sources` uncompressed into `root/FashionMNIST/raw`, each aside and renamed so
    none is half-written; later reads skip the decompression. True when `root` then holds all four uncompressed.

    A read error names the `.gz` file (DatasetNotFoundError). A folder that cannot be written (read-only, full)
    is no error: False, and the `.gz` files are read directly instead.
    """
    target = root / RAW
    for name, source in sources.items():
        if source == target / name:
            continue
        if source.suffix != ".gz":
            return False  # an uncompressed file elsewhere is read where it is
        content = _read_file(source)
        partial = target / f"{name}.partial"
        try:
            target.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(content)
            partial.replace(target / name)
        except OSError as error:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            log.info(
                "reading the .gz files of Fashion-MNIST directly: %s (%s)", error.filename or target, error.strerror
            )
            return False
    return True


def _prepare(root: Path, download: bool, origin: str) -> Path:
    """The folder to read the four files from: `root`, holding them uncompressed or as `.gz` files (uncompressed
    into its `FashionMNIST/raw/` where it can be written), or a download into it."""
    sources = _sources(root)
    if sources is not None:
        _decompress(sources, root)
        return root
    if download:
        try:
            from torchvision.datasets import FashionMNIST  # imported here: only a download needs torchvision

            for train in (True, False):
                FashionMNIST(str(root), train=train, download=True)
        except Exception as error:  # torchvision raises several kinds for a failed download
            raise DatasetNotFoundError(
                f"Fashion-MNIST is not in {origin} and the download failed ({error}).\n{HOW_TO_GET_IT}"
            ) from None
        return root
    raise DatasetNotFoundError(f"Fashion-MNIST is not in {origin} (download disabled).\n{HOW_TO_GET_IT}")


def locate(root: str | None = None, system_dir: str | None = None, download: bool = True) -> Path:
    """Return a folder holding the four files (see `_sources`), preparing it if needed.

    Any error of the file system while looking or reading is a DatasetNotFoundError naming the file and the cause.
    """
    try:
        if root is not None:
            explicit = Path(root).expanduser().resolve()
            return _prepare(explicit, download, f"data.root={explicit}")
        project = _sources(PROJECT_DATA_DIR)
        if project is None and system_dir is not None and (system := _sources(Path(system_dir))) is not None:
            return PROJECT_DATA_DIR if _decompress(system, PROJECT_DATA_DIR) else Path(system_dir)
        where = f"{PROJECT_DATA_DIR}" + (f" nor in {system_dir}" if system_dir else "")
        return _prepare(PROJECT_DATA_DIR, download, where)
    except OSError as error:
        raise _unreadable(Path(error.filename or root or PROJECT_DATA_DIR), error) from None


def _unreadable(path: Path, error: OSError) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"Fashion-MNIST file {path} could not be read ({error_reason(error)}).\n{HOW_TO_GET_IT}"
    )


def _read_file(path: Path) -> bytearray:
    """The whole file (uncompressed, for a `.gz` file) in one buffer that tensors can share without a copy."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return bytearray(handle.read())
        with open(path, "rb") as handle:
            buffer = bytearray(os.fstat(handle.fileno()).st_size)
            del buffer[handle.readinto(buffer) :]  # a file cut short meanwhile is checked for what it holds
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:  # BadGzipFile is an OSError: caught first
        raise DatasetCorruptError(
            f"Fashion-MNIST file {path} is not a whole gzip file ({error}). Delete it and put a whole copy "
            f"there.\n{HOW_TO_GET_IT}"
        ) from None
    except OSError as error:
        raise _unreadable(path, error) from None
    return buffer


def _idx_sizes(data: bytes | bytearray) -> list[int]:
    """The sizes in an IDX header (item count first); call only on a file `_idx_problem` accepted."""
    return [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]


def _idx_problem(name: str, data: bytes | bytearray, sha256: str) -> str | None:
    """What is wrong with the IDX file `name` holding `data` (of SHA-256 `sha256`), or None: its header (ubyte, rank,
    sizes) must promise exactly its size, and a file with the official item count must carry the official checksum."""
    expected_items, expected_sha256 = OFFICIAL[name]
    if len(data) < 4 or data[:3] != IDX_UBYTE_MAGIC:
        return f"{len(data)} bytes that do not start like an IDX ubyte file"
    rank = data[3]
    header = 4 + 4 * rank
    if len(data) < header:
        return f"{len(data)} bytes, shorter than its own header (truncated)"
    sizes = _idx_sizes(data)
    if rank < 1 or tuple(sizes[1:]) != ITEM_SHAPES[name]:
        return f"items of shape {tuple(sizes[1:])}, not {ITEM_SHAPES[name]}"
    promised = header + math.prod(sizes)
    if len(data) != promised:
        state = "truncated" if len(data) < promised else "with extra bytes at the end"
        return f"{len(data)} bytes where its header promises {promised} ({state})"
    if sizes[0] == expected_items and sha256 != expected_sha256:
        return "the size of the official file but another SHA-256 (damaged, or another dataset such as MNIST)"
    return None


def _decode(data: bytearray) -> torch.Tensor:
    """An accepted IDX ubyte file as a uint8 tensor of its header's shape, sharing `data`'s memory."""
    sizes = _idx_sizes(data)
    if math.prod(sizes) == 0:
        return torch.zeros(sizes, dtype=torch.uint8)
    return torch.frombuffer(data, dtype=torch.uint8, offset=4 + 4 * len(sizes)).view(sizes)


def _still_there(root: Path) -> dict[str, Path]:
    """`_sources` of a folder `locate` returned: the files are gone when it finds nothing now."""
    sources = _sources(root)
    if sources is None:
        raise DatasetNotFoundError(f"Fashion-MNIST is no longer in {root}.\n{HOW_TO_GET_IT}")
    return sources


def read_checked(root: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read the four files below `root` (see `_sources`) once each, check them and decode them: file name to uint8
    tensor, and the files' fingerprint, one SHA-256 from theirs (another dataset, or a file changed, gives another).

    Raises DatasetCorruptError unless all four are whole IDX files with matching image and label counts, naming
    every damaged file. A subset (e.g. a small synthetic set) passes; a file claiming to be the official one must be
    it, byte for byte.
    """
    return _read_checked(_still_there(root))


def _read_checked(sources: dict[str, Path]) -> tuple[dict[str, torch.Tensor], str]:
    """`read_checked` of the files `_sources` found."""
    contents = {name: _read_file(path) for name, path in sources.items()}
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    problems = [
        f"{sources[name].name}: {problem}"
        for name, data in contents.items()
        if (problem := _idx_problem(name, data, digests[name]))
    ]
    if not problems:
        counts = {name: _idx_sizes(data)[0] for name, data in contents.items()}
        for images, labels in (RAW_FILES[:2], RAW_FILES[2:]):
            if counts[images] != counts[labels]:
                problems.append(f"{images} holds {counts[images]} images but {labels} {counts[labels]} labels")
    if problems:
        found = "\n".join(f"  - {problem}" for problem in problems)
        raise DatasetCorruptError(
            f"Fashion-MNIST in {_where(sources)} is damaged:\n{found}\nDelete that folder and run again (or "
            f"`make setup`) to prepare it afresh, or put whole copies of the files there.\n{HOW_TO_GET_IT}"
        )
    fingerprint = hashlib.sha256("".join(digests[name] for name in RAW_FILES).encode()).hexdigest()
    return {name: _decode(data) for name, data in contents.items()}, fingerprint


# What this process has read: (the files' identity, device) -> (train_x, train_y, test_x, test_y) on that device and
# the files' fingerprint. Two entries at most, so a sweep over two data folders or two devices does not read on every
# job, and a long-lived process does not hoard datasets.
_LOADED: OrderedDict[tuple, tuple[tuple[torch.Tensor, ...], str]] = OrderedDict()
_LOADED_MAX = 2


def _identity(sources: dict[str, Path]) -> tuple:
    """The four files as the file system sees them: a file replaced or rewritten since it was read is read again."""
    identity = []
    for path in sources.values():
        try:
            st = path.stat()
        except OSError as error:
            raise _unreadable(path, error) from None
        identity.append((str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(identity)


def forget_loaded() -> None:
    """Drop what this process has read, so the next `load` reads the files again."""
    _LOADED.clear()


def _tensors(root: Path, device: torch.device) -> tuple[tuple[torch.Tensor, ...], str]:
    """The whole train and test sets on `device` and the files' fingerprint: read and checked the first time, then
    from memory."""
    sources = _still_there(root)
    key = (_identity(sources), str(device))
    if key in _LOADED:
        _LOADED.move_to_end(key)
        log.info("Fashion-MNIST from memory (read earlier in this process from %s)", _where(sources))
        return _LOADED[key]
    files, fingerprint = _read_checked(sources)  # the files the key describes
    tensors = tuple(  # train_x, train_y, test_x, test_y: the labels as int64, which cross_entropy takes
        (files[name].long() if "labels" in name else files[name]).to(device, non_blocking=device.type == "cuda")
        for name in RAW_FILES
    )
    log.info("Fashion-MNIST read from %s", _where(sources))
    _LOADED[key] = tensors, fingerprint
    while len(_LOADED) > _LOADED_MAX:
        _LOADED.popitem(last=False)
    return tensors, fingerprint


def load(
    *,
    device: torch.device,
    batch_size: int,
    root: str | None = None,
    system_dir: str | None = None,
    download: bool = True,
    train_size: int | None = None,
    normalize: bool = True,
) -> DeviceData:
    """Find the data and put it on `device`, reading the files only the first time this process asks for them;
    `train_size` keeps the first N training images (a view, no copy)."""
    tensors, fingerprint = _tensors(locate(root, system_dir, download), device)
    mean, std = (PIXEL_MEAN, PIXEL_STD) if normalize else (0.0, 1.0)
    return DeviceData(*tensors, batch_size, mean, std, fingerprint, INFO.num_classes).keep_first(train_size)


if __name__ == "__main__":
    print(f"Fashion-MNIST ready in {_where(_sources(locate(system_dir=DEBIAN_DIR)) or {})}")
