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
from lab.stress import cmdline, descendants, health_within

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


def test_a_dead_worker_fails_its_requests_with_503_at_once_and_is_restarted(trained):
    """The worker holds a request (collecting a batch for 6 s) when it is killed: the request gets a 503 at once,
    /health says 503 at once, and the restarted worker answers again."""
    photo = trained[1][0]
    server = Server(trained[0]["best_checkpoint"], "--batch_timeout", "6", "--max_batch_size", "8")
    try:
        workers = [pid for pid in descendants(server.proc.pid) if b"multiprocessing.spawn" in cmdline(pid)]
        assert len(workers) == 1
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(post, server, files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
            time.sleep(1.5)  # the worker has it now, waiting for more requests to fill its batch
            killed = time.monotonic()
            os.kill(workers[0], signal.SIGKILL)
            health = health_within(server.url, 1.0)
            answer = held.result(timeout=30)
        assert answer.status_code == 503 and time.monotonic() - killed < 3, (answer.status_code, answer.text)
        assert "stopped while answering" in answer.json()["detail"]
        assert 503 in health  # within a second of the kill
        restarted_and_answering(server, photo, workers)
        assert "Traceback" not in server.output()
    finally:
        server.stop()


def restarted_and_answering(server, photo, workers) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        answer = post(server, files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
        if answer.status_code == 200:
            break
        time.sleep(0.5)
    assert answer.status_code == 200
    assert [p for p in descendants(server.proc.pid) if b"multiprocessing.spawn" in cmdline(p)] != workers
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200


def test_the_api_key_guards_every_route_but_the_page(trained, tmp_path, monkeypatch):
    """The key from a file (a flag would show in ps), compared whole; the API's docs need it too (they are off)."""
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    guarded = Server(trained[0]["best_checkpoint"], "--api_key_file", str(key_file))
    try:
        photo = trained[1][0]
        files = {"image": (photo.name, photo.read_bytes(), "image/jpeg")}
        assert post(guarded, files=files).status_code == 401
        for wrong in ("wrong", "s3cre", "s3cret!"):
            assert post(guarded, files=files, headers={"X-API-Key": wrong}).status_code == 401
        assert post(guarded, files=files, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert httpx.get(f"{guarded.url}/info").status_code == 401
        for route in ("/docs", "/redoc", "/openapi.json"):
            assert httpx.get(f"{guarded.url}{route}").status_code in (401, 404), route
        assert httpx.get(f"{guarded.url}/").status_code == 200
        assert b"s3cret" not in cmdline(guarded.proc.pid)
    finally:
        guarded.stop()
    from catdog_lightning.serving.server import api_key

    monkeypatch.setenv("CATDOG_API_KEY", "from-the-environment")
    assert api_key({}) == "from-the-environment" and api_key({"api_key": "flag"}) == "flag"


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


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_a_signal_stops_the_whole_server_and_frees_its_port(trained, sig, code):
    """SIGTERM to the main process alone (kill, systemd, Docker); SIGINT to the group (Ctrl-C in a terminal)."""
    running = Server(trained[0]["best_checkpoint"])
    tree = descendants(running.proc.pid)
    assert len(tree) >= 2  # the HTTP server and the inference worker
    if sig == signal.SIGTERM:
        os.kill(running.proc.pid, sig)
    else:
        os.killpg(running.proc.pid, sig)
    try:
        assert running.proc.wait(timeout=30) == code
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (any(alive(p) for p in tree) or not port_free(running.port)):
            time.sleep(0.2)
        assert not [p for p in tree if alive(p)] and port_free(running.port)
        log = running.output()
        assert f"stopped by {sig.name}: every worker ended, port {running.port} free." in log
        assert "Traceback" not in log, log
    finally:
        running.stop()


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--api_key", ""], "--api_key is empty"),
        (["--api_key", "  "], "--api_key is empty"),
        (["--max_photos", "0"], "--max_photos must be between 1 and 10000"),
    ],
)
def test_an_empty_key_is_refused_not_taken_as_none(trained, argv, says, capsys):
    assert serve_main(["--ckpt_path", trained[0]["best_checkpoint"], *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err


def test_info_shows_no_path_of_the_servers_disk(server, trained):
    info = httpx.get(f"{server.url}/info").text
    assert str(Path(trained[0]["best_checkpoint"]).parent) not in info and 'checkpoint"' not in info


def big_png(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (side, side), 128).save(out, "PNG")
    return out.getvalue()


def test_wrapped_base64_is_read_and_errors_say_no_python_reprs(server, trained):
    photo = trained[1][0]
    encoded = base64.b64encode(photo.read_bytes()).decode()
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + "\n"  # what `base64` prints
    answer = post(server, json={"image": wrapped})
    assert answer.status_code == 200 and abs(answer.json()["p_cat"] - trained[2][photo.name]) < 1e-5
    garbage = post(server, files={"image": ("x.jpg", b"\x00" * 64, "image/jpeg")})
    assert garbage.status_code == 400 and " at 0x" not in garbage.text and "BytesIO" not in garbage.text
    number = post(server, json={"image": 12})
    assert number.status_code == 400 and "base64 text" in number.json()["error"]


def test_malformed_bodies_too_many_photos_and_pixels_are_one_line_4xx_and_no_traceback(trained):
    photo = trained[1][0].read_bytes()
    checked = Server(trained[0]["best_checkpoint"], "--max_photos", "2", "--max_pixels", "1000000")
    url = f"{checked.url}/predict"
    try:
        three = [("image", ("p.jpg", photo, "image/jpeg"))] * 3
        for answer in (httpx.post(url, files=three, timeout=60), httpx.post(url, json={"image": ["aGk="] * 3})):
            assert answer.status_code == 413 and "--max_photos" in answer.json()["error"]
        wide = httpx.post(url, files={"image": ("wide.png", big_png(1500), "image/png")}, timeout=60)
        assert wide.status_code == 422 and "1500x1500 pixels" in wide.json()["error"] and "--max_pixels" in wide.text
        assert httpx.post(url, files=three[:2], timeout=60).status_code == 200  # at the limits: answered
        cases = [
            ({"content": photo, "headers": {"Content-Type": "application/octet-stream"}}, 415),
            ({"content": photo, "headers": {"Content-Type": "image/jpeg"}}, 415),
            ({"content": photo}, 415),  # no Content-Type at all
            ({"content": b"--nope\r\n\r\n", "headers": {"Content-Type": "multipart/form-data; boundary=XYZ"}}, 400),
            ({"content": b'{"image": ', "headers": {"Content-Type": "application/json"}}, 400),
            ({"content": b"[" * 100_000 + b"]" * 100_000, "headers": {"Content-Type": "application/json"}}, 400),
            ({"files": [("image", ("a.jpg", b"x", "image/jpeg"))] * 1001}, 413),
        ]
        for kwargs, status in cases:
            answer = httpx.post(url, timeout=60, **kwargs)
            assert answer.status_code == status, (kwargs.get("headers"), answer.text)
            assert answer.json()["error"].count("\n") == 0
        assert httpx.post(url, files={"image": ("p.jpg", photo, "image/jpeg")}, timeout=60).status_code == 200
        log = checked.output()
    finally:
        checked.stop()
    assert "Traceback" not in log and "Internal server error" not in log, log
