"""Finding, reading, loading and batching Fashion-MNIST (synthetic files in torchvision's raw format), and the
device-resident data any dataset returns."""

import gzip
import os
from pathlib import Path

import pytest
import torch

from src.training import data
from src.training.datasets import fashion_mnist
from tests.conftest import RAW_NAMES, run_metrics, run_train, write_fashion_mnist

CPU = torch.device("cpu")
QUICK = ("data.batch_size=256", "trainer.epochs=1", "trainer.threads=1", "trainer.progress=false")


def test_explicit_root_is_loaded_as_uint8_tensors(synthetic_root):
    loaded = fashion_mnist.load(device=CPU, batch_size=100, root=str(synthetic_root))
    assert loaded.train_x.shape == (512, 28, 28) and loaded.train_x.dtype == torch.uint8
    assert loaded.test_x.shape == (256, 28, 28)
    assert loaded.train_y.dtype == torch.int64 and int(loaded.train_y.max()) <= 9
    assert loaded.steps_per_epoch == 6
    assert loaded.batch_sizes() == [100] * 5 + [12]


def test_train_size_keeps_the_first_images(synthetic_root):
    full = fashion_mnist.load(device=CPU, batch_size=64, root=str(synthetic_root))
    subset = fashion_mnist.load(device=CPU, batch_size=64, root=str(synthetic_root), train_size=100)
    assert torch.equal(subset.train_x, full.train_x[:100])
    assert subset.steps_per_epoch == 2 and subset.test_x.shape[0] == 256


def test_debian_gz_files_are_decompressed_once_into_the_project_folder(tmp_path, monkeypatch):
    source = write_fashion_mnist(tmp_path / "plain", train_size=64, test_size=32) / "FashionMNIST" / "raw"
    debian = tmp_path / "debian"
    debian.mkdir()
    for name in RAW_NAMES.values():
        with gzip.open(debian / f"{name}.gz", "wb") as handle:
            handle.write((source / name).read_bytes())
    project = tmp_path / "project-data"
    monkeypatch.setattr(fashion_mnist, "PROJECT_DATA_DIR", project)

    found = fashion_mnist.locate(system_dir=str(debian), download=False)

    assert found == project
    for name in RAW_NAMES.values():
        assert (project / "FashionMNIST" / "raw" / name).read_bytes() == (source / name).read_bytes()
    assert not list((project / "FashionMNIST" / "raw").glob("*.partial"))
    # Second call: found in the project folder, the Debian folder is not needed any more.
    assert fashion_mnist.locate(system_dir=str(tmp_path / "gone"), download=False) == project


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "PROJECT_DATA_DIR", tmp_path / "empty")
    with pytest.raises(fashion_mnist.DatasetNotFoundError) as error:
        fashion_mnist.locate(system_dir=str(tmp_path / "no-debian"), download=False)
    assert "apt-get install dataset-fashion-mnist" in str(error.value)
    assert "data.root" in str(error.value)


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("torchvision.datasets.FashionMNIST", no_network)  # the download stays torchvision's
    with pytest.raises(fashion_mnist.DatasetNotFoundError) as error:
        fashion_mnist.locate(root=str(tmp_path / "fresh"), download=True)
    assert "download failed (network unreachable)" in str(error.value)
    assert "apt-get install dataset-fashion-mnist" in str(error.value)


def test_an_epoch_visits_every_image_once_in_a_seeded_order(synthetic_root):
    loaded = fashion_mnist.load(device=CPU, batch_size=100, root=str(synthetic_root), normalize=False)

    def epoch_labels(seed):
        generator = torch.Generator().manual_seed(seed)
        batches = list(loaded.train_batches(generator))
        return [len(labels) for _, labels in batches], torch.cat([labels for _, labels in batches])

    sizes, labels = epoch_labels(seed=3)
    assert sizes == [100] * 5 + [12]
    assert torch.equal(torch.sort(labels).values, torch.sort(loaded.train_y).values)
    assert torch.equal(labels, epoch_labels(seed=3)[1])
    assert not torch.equal(labels, epoch_labels(seed=4)[1])


def test_inputs_are_normalised_in_batch():
    images = torch.tensor([[[0, 255]]], dtype=torch.uint8).expand(1, 28, 2)
    plain = data.DeviceData(images, images, images, images, batch_size=1, mean=0.0, std=1.0)
    normalised = data.DeviceData(images, images, images, images, batch_size=1, mean=0.5, std=0.25)
    assert plain.to_input(images).shape == (1, 1, 28, 2)
    assert plain.to_input(images)[0, 0, 0].tolist() == [0.0, 1.0]
    assert normalised.to_input(images)[0, 0, 0].tolist() == [-2.0, 2.0]


def torchvision_tensors(root) -> dict[str, torch.Tensor]:
    from torchvision.datasets import FashionMNIST

    train, test = (FashionMNIST(str(root), train=split, download=False) for split in (True, False))
    return {"train_x": train.data, "train_y": train.targets, "test_x": test.data, "test_y": test.targets}


def assert_same_as_torchvision(root) -> None:
    loaded = fashion_mnist.load(device=CPU, batch_size=256, root=str(root), download=False)
    for name, expected in torchvision_tensors(root).items():
        got = getattr(loaded, name)
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        assert torch.equal(got, expected), name


def test_the_direct_reader_returns_what_torchvision_reads(tmp_path):
    assert_same_as_torchvision(write_fashion_mnist(tmp_path, train_size=300, test_size=70))


def test_the_direct_reader_returns_what_torchvision_reads_from_the_real_files():
    if not (fashion_mnist.PROJECT_DATA_DIR / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip("the real Fashion-MNIST is not prepared in data/")
    assert_same_as_torchvision(fashion_mnist.PROJECT_DATA_DIR)


@pytest.fixture
def counted_reads(monkeypatch):
    """The names of the files read from disk, in order, from a process that has read nothing yet."""
    reads: list[str] = []
    read_file = fashion_mnist._read_file

    def counting(path):
        reads.append(path.name)
        return read_file(path)

    fashion_mnist.forget_loaded()
    monkeypatch.setattr(fashion_mnist, "_read_file", counting)
    yield reads
    fashion_mnist.forget_loaded()


def test_a_process_reads_the_files_once_and_serves_later_loads_from_memory(tmp_path, counted_reads):
    root = str(write_fashion_mnist(tmp_path, train_size=64, test_size=32))
    first = fashion_mnist.load(device=CPU, batch_size=16, root=root)
    assert counted_reads == list(RAW_NAMES.values())
    again = fashion_mnist.load(device=CPU, batch_size=32, root=root, train_size=40, normalize=False)
    assert len(counted_reads) == 4
    assert again.train_x.data_ptr() == first.train_x.data_ptr()  # the same memory, the subset a view of it
    assert again.train_size == 40 and again.steps_per_epoch == 2 and again.mean == 0.0
    assert torch.equal(again.train_y, first.train_y[:40]) and torch.equal(again.test_x, first.test_x)

    other = write_fashion_mnist(tmp_path / "other", train_size=48, test_size=32)
    assert fashion_mnist.load(device=CPU, batch_size=16, root=str(other)).train_size == 48
    assert len(counted_reads) == 8  # another folder is other data
    fashion_mnist.forget_loaded()
    fashion_mnist.load(device=CPU, batch_size=16, root=root)
    assert len(counted_reads) == 12


def test_a_file_changed_after_it_was_read_is_read_and_checked_again(tmp_path, counted_reads):
    root = write_fashion_mnist(tmp_path, train_size=64, test_size=32)
    fashion_mnist.load(device=CPU, batch_size=16, root=str(root))
    labels = root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-3])
    with pytest.raises(fashion_mnist.DatasetCorruptError) as refused:
        fashion_mnist.load(device=CPU, batch_size=16, root=str(root))
    assert "train-labels-idx1-ubyte: 69 bytes where its header promises 72 (truncated)" in str(refused.value)

    write_fashion_mnist(root, train_size=48, test_size=32)  # whole again, and other data
    assert fashion_mnist.load(device=CPU, batch_size=16, root=str(root)).train_size == 48


def test_an_unreadable_file_is_named(tmp_path, monkeypatch):
    root = write_fashion_mnist(tmp_path, train_size=64, test_size=32)
    images = root / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    fashion_mnist.forget_loaded()
    real_open = open

    def refusing_open(path, *args, **kwargs):
        if str(path) == str(images):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(fashion_mnist, "open", refusing_open, raising=False)
    with pytest.raises(fashion_mnist.DatasetNotFoundError) as refused:
        fashion_mnist.load(device=CPU, batch_size=16, root=str(root))
    assert f"{images} could not be read (Permission denied)" in str(refused.value)


def gz_root(folder: Path, plain_root: Path) -> Path:
    """A data.root holding only the four files gzipped (as the Debian package ships them), at its top level."""
    folder.mkdir(parents=True)
    for name in RAW_NAMES.values():
        with gzip.open(folder / f"{name}.gz", "wb") as handle:
            handle.write((plain_root / "FashionMNIST" / "raw" / name).read_bytes())
    return folder


def files_below(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def test_gz_files_in_a_folder_that_cannot_be_written_are_read_compressed(tmp_path, synthetic_root):
    root = gz_root(tmp_path / "gz", synthetic_root)
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.partial").symlink_to("/dev/full")  # the decompressed copy finds a full disk
    before = files_below(root)
    loaded = fashion_mnist.load(device=CPU, batch_size=64, root=str(root), download=False)
    assert files_below(root) == before - {"FashionMNIST/raw/train-images-idx3-ubyte.partial"}  # no copy, no half
    plain = fashion_mnist.load(device=CPU, batch_size=64, root=str(synthetic_root))
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(loaded, name), getattr(plain, name)), name


def test_debian_gz_files_are_read_compressed_when_the_project_folder_cannot_be_written(
    tmp_path, synthetic_root, monkeypatch
):
    debian = gz_root(tmp_path / "debian", synthetic_root)
    (tmp_path / "a_file").write_text("")
    monkeypatch.setattr(fashion_mnist, "PROJECT_DATA_DIR", tmp_path / "a_file" / "data")  # no folder can be made there
    assert fashion_mnist.locate(system_dir=str(debian), download=False) == debian
    assert fashion_mnist.load(device=CPU, batch_size=64, system_dir=str(debian), download=False).train_size == 512


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_gz_files_in_a_read_only_folder_are_read_compressed(tmp_path, synthetic_root):
    root = gz_root(tmp_path / "gz", synthetic_root)
    root.chmod(0o555)
    try:
        assert fashion_mnist.load(device=CPU, batch_size=64, root=str(root), download=False).train_size == 512
        assert not (root / "FashionMNIST").exists()
    finally:
        root.chmod(0o755)


def damage(root: Path, how: str) -> Path:
    """Damage one file of `root` in a way that holds as root too; return the file."""
    if how in ("truncated-gz", "not-gz"):
        path = root / "t10k-labels-idx1-ubyte.gz"
        path.write_bytes(path.read_bytes()[:-20] if how == "truncated-gz" else b"<html>not found</html>")
    else:
        path = root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
        path.unlink()
        if how == "folder-in-place":
            path.mkdir()
        else:
            path.symlink_to(root / "gone")
    return path


UNREADABLE = {
    "truncated-gz": "is not a whole gzip file (Compressed file ended before the end-of-stream marker was reached)",
    "not-gz": "is not a whole gzip file (Not a gzipped file (b'<h'))",
    "folder-in-place": "could not be read (Is a directory)",
    "dangling-link": "could not be read (No such file or directory)",
}


@pytest.mark.parametrize("how", list(UNREADABLE))
def test_a_dataset_file_that_cannot_be_read_is_named_with_the_cause(tmp_path, synthetic_root, how):
    if how.endswith("gz"):
        root = gz_root(tmp_path / "root", synthetic_root)
    else:
        root = write_fashion_mnist(tmp_path / "root", train_size=64, test_size=32)
    path = damage(root, how)
    with pytest.raises(fashion_mnist.DatasetNotFoundError) as refused:
        fashion_mnist.load(device=CPU, batch_size=16, root=str(root), download=False)
    assert f"Fashion-MNIST file {path} {UNREADABLE[how]}" in str(refused.value)


def test_the_command_line_names_an_unreadable_dataset_file_with_exit_2(tmp_path, synthetic_root):
    path = damage(gz_root(tmp_path / "root", synthetic_root), "truncated-gz")
    done = run_train(f"data.root={path.parent}", *QUICK, f"output_root={tmp_path / 'out'}", timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"Fashion-MNIST file {path} is not a whole gzip file" in done.stderr
    assert "cannot write the run's files" not in done.stderr and "Traceback" not in done.stderr


def test_the_command_line_trains_from_gz_files_it_cannot_decompress_next_to_them(tmp_path, synthetic_root):
    root = gz_root(tmp_path / "root", synthetic_root)
    (root / "FashionMNIST").write_text("")  # no FashionMNIST/raw/ can be made there
    done = run_train(f"data.root={root}", *QUICK, f"hydra.run.dir={tmp_path / 'run'}", timeout=120)
    assert done.returncode == 0, done.stderr
    assert run_metrics(tmp_path / "run")["epochs"] == 1
    assert files_below(root) == {"FashionMNIST", *(f"{name}.gz" for name in RAW_NAMES.values())}
