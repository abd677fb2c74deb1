"""scripts/serve.py for real: a LitServe server in a subprocess on a free port, spoken to over HTTP."""

import base64
import io
import os
import signal
import struct
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import Server, make_tiny_config
from PIL import Image

from catdog_lightning import load_classifier
from catdog_lightning.cli import serve_main
from catdog_lightning.training import train

httpx = pytest.importorskip("httpx")
pytest.importorskip("litserve", reason="the serve extra is not installed: pip install -e .[serve]")


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    config = make_tiny_config(tiny_dataset, tmp_path_factory.mktemp("serve"))
    metrics = train(config)
    photos = sorted((tiny_dataset / "test").rglob("*.jpg"))
    predicted = load_classifier(metrics["best_checkpoint"]).predict(photos)
    expected = {p.name: r.p_cat for p, r in zip(photos, predicted, strict=True)}
    return metrics, photos, expected


@pytest.fixture(scope="module")
def server(trained):
    running = Server(trained[0]["best_checkpoint"], "--max_upload_mb", "1", "--max_batch_size", "8")
    yield running
    running.stop()


def post(server, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}/predict", timeout=60, **kwargs)


def test_a_photo_as_upload_or_base64_gets_predicts_p_cat(server, trained):
    _, photos, expected = trained
    for photo in photos[:4]:
        upload = post(server, files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
        as_json = post(server, json={"image": base64.b64encode(photo.read_bytes()).decode()})
        for answer in (upload, as_json):
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert abs(body["p_cat"] - expected[photo.name]) < 1e-5
            assert body["label"] == ("cat" if expected[photo.name] > 0.5 else "dog")
            assert body["model"] == "version_0/best.ckpt"


def test_several_photos_in_one_request(server, trained):
    _, photos, expected = trained
    files = [("image", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[:3]]
    body = post(server, files=files).json()
    assert [round(a["p_cat"], 5) for a in body["predictions"]] == [round(expected[p.name], 5) for p in photos[:3]]
    body = post(server, json={"image": [base64.b64encode(p.read_bytes()).decode() for p in photos[3:5]]}).json()
    assert len(body["predictions"]) == 2


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge picture: a decompression bomb to a decoder that trusts it."""
    head = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "request_kwargs, status, says",
    [
        ({"files": {"image": ("notes.jpg", b"this is not a picture", "image/jpeg")}}, 400, "not a readable"),
        ({"files": {"image": ("cut.jpg", jpeg_bytes()[:200], "image/jpeg")}}, 400, "cut.jpg"),
        ({"files": {"image": ("empty.jpg", b"", "image/jpeg")}}, 400, "empty"),
        ({"files": {"image": ("bomb.png", png_claiming(40000, 40000), "image/png")}}, 422, "bomb.png"),
        ({"files": {"photo": ("x.jpg", jpeg_bytes(), "image/jpeg")}}, 400, "no 'image' field"),
        ({"json": {"picture": "abc"}}, 400, '{"image"'),
        ({"json": {"image": "%%% not base64 %%%"}}, 400, "not base64"),
        ({"files": {"image": ("big.jpg", b"\xff" * (2 * 2**20), "image/jpeg")}}, 413, ""),
    ],
)
def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(server, trained, request_kwargs, status, says):
    answer = post(server, **request_kwargs)
    assert answer.status_code == status, answer.text
    assert says in answer.text.replace('\\"', '"')
    photo = trained[1][0]
    assert post(server, files={"image": (photo.name, photo.read_bytes(), "image/jpeg")}).status_code == 200


def test_a_bad_photo_fails_alone_in_a_batch_of_good_ones(server, trained):
    """LitServe fails a whole batch when one request raises: ours never does, so only the bad one is a 4xx."""
    _, photos, expected = trained
    requests = [("image", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[:12]]
    requests.insert(5, ("image", ("bad.jpg", b"garbage", "image/jpeg")))
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda item: post(server, files=[item]), requests))
    statuses = [a.status_code for a in answers]
    assert statuses.count(400) == 1 and statuses[5] == 400 and statuses.count(200) == 12


def test_32_requests_at_once_get_32_right_answers(server, trained):
    _, photos, expected = trained
    chosen = [photos[i % len(photos)] for i in range(32)]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda p: post(server, files={"image": (p.name, p.read_bytes(), "image/jpeg")}),
                                chosen))  # fmt: skip
    assert all(a.status_code == 200 for a in answers)
    assert all(abs(a.json()["p_cat"] - expected[p.name]) < 1e-5 for a, p in zip(answers, chosen, strict=True))


def test_health_info_and_the_page(server, trained):
    assert httpx.get(f"{server.url}/health").text == "ok"
    model = httpx.get(f"{server.url}/info").json()["model"]
    assert model["arch"] == "mlp" and model["image_size"] == 16
    assert model["test_acc"] == pytest.approx(trained[0]["test/acc"])
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and '<input id="files" type="file"' in page.text and "/predict" in page.text


def test_a_dead_worker_is_restarted_and_the_server_answers_again(server, trained):
    photo = trained[1][0]
    workers = [pid for pid in children(server.proc.pid) if b"multiprocessing.spawn" in cmdline(pid)]
    assert len(workers) == 1
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        answer = post(server, files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
        if answer.status_code == 200:
            break
        time.sleep(0.5)
    assert answer.status_code == 200
    assert [p for p in children(server.proc.pid) if b"multiprocessing.spawn" in cmdline(p)] != workers


def children(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").iterdir():
            kids = [int(c) for c in (task / "children").read_text().split()]
            found += kids
            todo += kids
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_the_api_key_guards_every_route_but_the_page(trained):
    guarded = Server(trained[0]["best_checkpoint"], "--api_key", "s3cret")
    try:
        photo = trained[1][0]
        files = {"image": (photo.name, photo.read_bytes(), "image/jpeg")}
        assert post(guarded, files=files).status_code == 401
        assert post(guarded, files=files, headers={"X-API-Key": "wrong"}).status_code == 401
        assert post(guarded, files=files, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert httpx.get(f"{guarded.url}/info").status_code == 401
        assert httpx.get(f"{guarded.url}/").status_code == 200
    finally:
        guarded.stop()


@pytest.mark.parametrize(("backend", "tolerance"), [("onnx", 1e-4), ("int8", 0.1)])
def test_the_onnx_backends_answer_like_the_checkpoint(trained, backend, tolerance):
    pytest.importorskip("onnxruntime")
    _, photos, expected = trained
    onnx = Server(trained[0]["best_checkpoint"], "--backend", backend)
    try:
        assert httpx.get(f"{onnx.url}/info").json()["model"]["backend"] == backend
        for photo in photos[:4]:
            body = post(onnx, files={"image": (photo.name, photo.read_bytes(), "image/jpeg")}).json()
            assert abs(body["p_cat"] - expected[photo.name]) < tolerance
    finally:
        onnx.stop()
    assert not list(Path(tempfile.gettempdir()).glob("catdog-serve-*/model.*.onnx"))  # removed when it stopped


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--port", "80"], "--port must be between 1024 and 65535"),
        (["--backend", "tensorflow"], "--backend must be one of torch, onnx"),
        (["--host", "example.com"], "--host must be one of"),
        (["--workers", "0"], "--workers must be between 1 and 64"),
    ],
)
def test_bad_serve_flags_are_one_line_exit_2(trained, argv, says, capsys):
    assert serve_main(["--ckpt_path", trained[0]["best_checkpoint"], *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err
