"""DataLoader defaults, EXIF orientation, per-worker augmentation streams, normalisation on the device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from kibble import KibbleError
from kibble.data import datamodule as dm_module
from kibble.data.dataset import ManifestDataset, seed_worker
from kibble.data.datamodule import ManifestDataModule, resolve_num_workers
from kibble.data.images import read_rgb
from kibble.data.transforms import DeviceTransform, build_transform

DATA_CONFIG = {"input_size": (3, 32, 32), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "crop_pct": 0.875}


@pytest.mark.parametrize(("cpus", "processes", "expected"), [(1, 1, 0), (2, 1, 1), (4, 1, 3), (16, 1, 8), (64, 1, 8), (16, 8, 1), (16, 4, 3)])
def test_auto_workers_leave_a_core_per_process_and_stop_at_eight(monkeypatch: pytest.MonkeyPatch, cpus: int, processes: int, expected: int):
    monkeypatch.setattr(dm_module, "available_cpus", lambda: cpus)
    assert resolve_num_workers("auto", processes) == expected


def test_explicit_workers_are_kept_and_nonsense_is_one_clear_line():
    assert resolve_num_workers(0) == 0 and resolve_num_workers(3) == 3 and resolve_num_workers("5") == 5
    for bad in ("many", -1, 2.5):
        with pytest.raises(KibbleError, match=r"data.num_workers=.*use auto or a whole number >= 0"):
            resolve_num_workers(bad)


def test_default_config_feeds_a_gpu(digits_workspace: Path, compose):
    cfg = compose("train", [f"workspace={digits_workspace}", "data=default"])
    assert cfg.data.num_workers == "auto" and cfg.data.pin_memory == "auto" and cfg.data.persistent_workers is True
    assert compose("train", [f"workspace={digits_workspace}", "data=digits"]).data.num_workers == 0


def test_loaders_keep_train_and_val_workers_and_use_workers_to_predict(digits_workspace: Path):
    dm = ManifestDataModule(str(digits_workspace), num_workers=1, prefetch_factor=3, batch_size=16).configure(DATA_CONFIG)
    dm.setup("fit")
    dm.set_predict(dm.manifest.iloc[:5])
    train, val, test, predict = dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader(), dm.predict_dataloader()
    assert [lo.num_workers for lo in (train, val, test, predict)] == [1, 1, 1, 1]
    assert train.persistent_workers and val.persistent_workers and not test.persistent_workers and not predict.persistent_workers
    assert train.prefetch_factor == 3 and train.worker_init_fn is seed_worker
    assert train.pin_memory == torch.cuda.is_available()  # auto, no Trainer attached
    assert not ManifestDataModule(str(digits_workspace), num_workers=0, pin_memory=False).configure(DATA_CONFIG)._pin()
    inline = ManifestDataModule(str(digits_workspace), num_workers=0, prefetch_factor=3).configure(DATA_CONFIG)
    inline.setup("fit")
    assert inline.train_dataloader().num_workers == 0  # prefetch_factor is only for workers
    with pytest.raises(KibbleError, match="data.pin_memory='sometimes'; use true, false or auto"):
        ManifestDataModule(str(digits_workspace), pin_memory="sometimes")


def test_drop_last_keeps_train_batches_full_but_never_leaves_none(digits_workspace: Path):
    dm = ManifestDataModule(str(digits_workspace), num_workers=0, batch_size=16, drop_last=True).configure(DATA_CONFIG)
    dm.setup("fit")
    assert len(dm.fit_rows) % 16 != 0  # a partial last batch exists to be dropped
    assert len(dm.train_dataloader()) == len(dm.fit_rows) // 16
    assert {len(batch[1]) for batch in dm.train_dataloader()} == {16}
    assert len(dm.val_dataloader()) == -(-len(dm.val_rows) // 16)  # evaluation keeps every row
    huge = ManifestDataModule(str(digits_workspace), num_workers=0, batch_size=100_000, drop_last=True).configure(DATA_CONFIG)
    huge.setup("fit")
    assert len(huge.train_dataloader()) == 1  # fewer rows than a batch: kept, not dropped to nothing


def test_exif_orientation_is_honoured(tmp_path: Path):
    pixels = np.zeros((20, 40, 3), np.uint8)  # stored landscape: left half red, right half blue
    pixels[:, :20, 0] = 255
    pixels[:, 20:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    upright = read_rgb(path)
    assert upright.shape == (40, 20, 3)  # portrait, as a photo viewer shows it
    assert upright[:20, :, 0].mean() > 200 and upright[:20, :, 2].mean() < 50  # the red half is on top
    assert upright[20:, :, 2].mean() > 200
    assert read_rgb(path, min_side=8).shape == (20, 10, 3)  # draft decoding: half scale, still upright
    Image.fromarray(pixels).save(tmp_path / "plain.jpg", quality=95)
    assert read_rgb(tmp_path / "plain.jpg").shape == (20, 40, 3)


class _SameImage(torch.utils.data.Dataset):
    def __init__(self):
        self.image = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
        self.transform = build_transform(DATA_CONFIG, train=True)

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return self.transform(self.image)

    reseed = ManifestDataset.reseed


def test_each_worker_and_epoch_augments_differently():
    loader = DataLoader(_SameImage(), batch_size=1, num_workers=2, worker_init_fn=seed_worker, generator=torch.Generator().manual_seed(0))
    epoch1 = [float(x.sum()) for x in loader]
    epoch2 = [float(x.sum()) for x in loader]
    assert len(set(epoch1)) == len(epoch1)  # without reseeding, worker 0 and 1 produced the same crops
    assert not set(epoch1) & set(epoch2)  # without reseeding, every epoch of fresh workers repeated the first


def test_normalising_on_the_device_equals_normalising_on_the_cpu(digits_workspace: Path):
    on_cpu = ManifestDataModule(str(digits_workspace), num_workers=0, batch_size=32).configure(DATA_CONFIG)
    on_device = ManifestDataModule(str(digits_workspace), num_workers=0, batch_size=32, normalize_on_device=True).configure(DATA_CONFIG)
    for dm in (on_cpu, on_device):
        dm.setup("fit")
    x_cpu, y_cpu, _ = next(iter(on_cpu.test_dataloader()))
    raw, y_dev, idx = next(iter(on_device.test_dataloader()))
    assert raw.dtype == torch.uint8 and x_cpu.dtype == torch.float32
    x_dev, y_after, _ = on_device.on_after_batch_transfer([raw, y_dev, idx], 0)
    assert torch.equal(y_cpu, y_after)
    torch.testing.assert_close(x_dev, x_cpu, atol=1e-5, rtol=1e-5)
    assert on_cpu.on_after_batch_transfer([x_cpu, y_cpu, idx], 0)[0] is x_cpu  # off: nothing touched

    image = np.random.default_rng(1).integers(0, 256, (40, 52, 3), dtype=np.uint8)  # train: same crop when seeded alike
    float_t, uint8_t = build_transform(DATA_CONFIG, train=True), build_transform(DATA_CONFIG, train=True, normalize=False)
    float_t.pipeline.set_random_seed(7)
    uint8_t.pipeline.set_random_seed(7)
    normalizer = DeviceTransform(DATA_CONFIG["mean"], DATA_CONFIG["std"])
    torch.testing.assert_close(normalizer(uint8_t(image)[None]), float_t(image)[None], atol=1e-5, rtol=1e-5)


def test_colour_jitter_on_the_device_matches_albumentations():
    import albumentations.augmentations.pixel.functional as F

    from kibble.data.transforms import jitter_batch

    image = np.random.default_rng(2).integers(0, 256, (24, 30, 3), dtype=np.uint8)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    one = lambda v: torch.tensor([v])  # noqa: E731
    steps = [F.adjust_brightness_torchvision, F.adjust_contrast_torchvision, F.adjust_saturation_torchvision]
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        factors = (1.15, 0.85, 1.2)
        expected = image
        for step in order:
            expected = steps[step](expected, factors[step])
        got = jitter_batch(x.clone(), one(factors[0]), one(factors[1]), one(factors[2]), order)[0].permute(1, 2, 0).numpy()
        assert np.abs(got - expected.astype(np.float32)).max() <= 3.0  # albumentations rounds to uint8 after each step


def test_device_transform_jitters_only_when_training(digits_workspace: Path):
    from kibble.data.transforms import DeviceTransform

    batch = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    device = DeviceTransform(DATA_CONFIG["mean"], DATA_CONFIG["std"], jitter=0.2)
    plain = DeviceTransform(DATA_CONFIG["mean"], DATA_CONFIG["std"])(batch)
    torch.testing.assert_close(device(batch, train=False), plain)
    torch.manual_seed(0)
    changed = ((device(batch, train=True) - plain).abs().amax((1, 2, 3)) > 1e-4).float().mean()
    assert 0.6 < float(changed) < 0.97  # about JITTER_P = 80 % of the images get jitter
    assert DeviceTransform(DATA_CONFIG["mean"], DATA_CONFIG["std"])(plain) is plain  # floats pass through

    dm = ManifestDataModule(str(digits_workspace), num_workers=0, normalize_on_device=True, augment={"jitter": 0.2, "jitter_on_device": True})
    assert not any(type(t).__name__ == "ColorJitter" for t in build_transform(DATA_CONFIG, train=True, normalize=False, jitter_on_device=True).pipeline)
    assert dm.configure(DATA_CONFIG).device_transform.jitter == 0.2
    with pytest.raises(KibbleError, match="jitter_on_device=true needs data.normalize_on_device=true"):
        ManifestDataModule(str(digits_workspace), augment={"jitter": 0.2, "jitter_on_device": True})


def test_batches_are_nchw_in_channels_last_memory(digits_workspace: Path):
    dm = ManifestDataModule(str(digits_workspace), num_workers=0, batch_size=8).configure(DATA_CONFIG)
    dm.setup("fit")
    x, y, idx = next(iter(dm.test_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    assert y.dtype == idx.dtype == torch.int64 and idx.tolist() == list(range(8))
    dataset = dm.make_dataset(dm.test_rows, train=False)
    torch.testing.assert_close(x, torch.stack([dataset[i][0] for i in range(8)]).contiguous())
