"""Finding, loading and batching Fashion-MNIST (synthetic files in torchvision's raw format)."""

import gzip

import pytest
import torch

from src import data
from tests.conftest import RAW_NAMES, write_fashion_mnist

CPU = torch.device("cpu")


def test_explicit_root_is_loaded_as_uint8_tensors(synthetic_root):
    loaded = data.load(device=CPU, batch_size=100, root=str(synthetic_root))
    assert loaded.train_x.shape == (512, 28, 28) and loaded.train_x.dtype == torch.uint8
    assert loaded.test_x.shape == (256, 28, 28)
    assert loaded.train_y.dtype == torch.int64 and int(loaded.train_y.max()) <= 9
    assert loaded.steps_per_epoch == 6
    assert loaded.batch_sizes() == [100] * 5 + [12]


def test_train_size_keeps_the_first_images(synthetic_root):
    full = data.load(device=CPU, batch_size=64, root=str(synthetic_root))
    subset = data.load(device=CPU, batch_size=64, root=str(synthetic_root), train_size=100)
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
    monkeypatch.setattr(data, "PROJECT_DATA_DIR", project)

    found = data.locate(system_dir=str(debian), download=False)

    assert found == project
    for name in RAW_NAMES.values():
        assert (project / "FashionMNIST" / "raw" / name).read_bytes() == (source / name).read_bytes()
    assert not list((project / "FashionMNIST" / "raw").glob("*.partial"))
    # Second call: found in the project folder, the Debian folder is not needed any more.
    assert data.locate(system_dir=str(tmp_path / "gone"), download=False) == project


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "PROJECT_DATA_DIR", tmp_path / "empty")
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.locate(system_dir=str(tmp_path / "no-debian"), download=False)
    assert "apt-get install dataset-fashion-mnist" in str(error.value)
    assert "data.root" in str(error.value)


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(data, "FashionMNIST", no_network)
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.locate(root=str(tmp_path / "fresh"), download=True)
    assert "download failed (network unreachable)" in str(error.value)
    assert "apt-get install dataset-fashion-mnist" in str(error.value)


def test_an_epoch_visits_every_image_once_in_a_seeded_order(synthetic_root):
    loaded = data.load(device=CPU, batch_size=100, root=str(synthetic_root), normalize=False)

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
