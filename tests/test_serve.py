"""`msir serve` as a user runs it: a subprocess on a free loopback port, a real HTTP client, a real browser.

One server (the session's classification run, an API key, small limits so
that each limit is cheap to reach, a request log) serves every test here; its
answers are compared with `msir predict`'s for the same files, run once in
another new process while the server starts. The last test stops it with
SIGTERM.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import soundfile

from conftest import tone, write_wav

requests = pytest.importorskip("requests")  # the test extra's HTTP client

ROOT = pathlib.Path(__file__).resolve().parents[1]
KEY = "test-key-0123456789"
MAX_SECONDS = 8  # /v1/predict's limit here: the long recording below is over it
MAX_MB = 1  # the upload limit here
CLIENTS, LOAD_FILES, PER_CLIENT = 32, 10, 3  # the load test: 32 clients, 3 requests each, over 10 EmoDB files

# `main` on each (name, args), in one new interpreter: {name: {status, out, err}}.
REFERENCE = textwrap.dedent("""
    import contextlib, io, json, sys
    from msir_keras.cli import main

    results = {}
    for name, args in json.load(open(sys.argv[1])):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(args)
        results[name] = {"status": status, "out": out.getvalue(), "err": err.getvalue()}
    json.dump(results, open(sys.argv[2], "w"))
""")


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0")


@pytest.fixture(scope="module")
def files(emodb_manifest, tmp_path_factory):
    """The load test's EmoDB files, a long recording, and the bad inputs, on disk."""
    folder = tmp_path_factory.mktemp("serve-files")
    paths = pd.read_csv(emodb_manifest)["path"].tolist()
    load = paths[:: len(paths) // LOAD_FILES][:LOAD_FILES]
    long = np.concatenate([soundfile.read(p, dtype="float32")[0] for p in paths[-5:]])
    data = pathlib.Path(load[0]).read_bytes()
    bad = {
        "unreadable": folder / "broken.wav",
        "empty": folder / "empty.wav",
        "too-short": pathlib.Path(write_wav(str(folder / "short.wav"), tone(0.01))),
        "non-finite": pathlib.Path(write_wav(str(folder / "nan.wav"), np.full(8000, np.nan, np.float32),
                                             subtype="FLOAT")),
    }
    bad["unreadable"].write_bytes(b"RIFF1234WAVEjunk")
    bad["empty"].write_bytes(b"")
    truncated = folder / "truncated.wav"
    truncated.write_bytes(data[:-2000])  # its header declares 2000 bytes more: a warning, still predicted
    return {"load": load, "long": write_wav(str(folder / "long.wav"), long), "bad": bad,
            "truncated": str(truncated), "folder": folder}


@pytest.fixture(scope="module")
def server(runs, files, tmp_path_factory):
    """(base URL, process, log dir, `msir predict`'s results): the server, started once for the module."""
    run = str(runs["classification"])
    folder = tmp_path_factory.mktemp("serve")
    log = open(folder / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "msir_keras.cli", "serve", "--model", run, "--port", "0", "--api-key", KEY,
         "--max-seconds", str(MAX_SECONDS), "--max-mb", str(MAX_MB), "--log-dir", str(folder / "log")],
        stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=folder)
    try:
        # Meanwhile, the reference: `msir predict` on the same files, and its timeline of the long one.
        bad = [str(p) for p in files["bad"].values()]
        calls = [("predict", ["predict", *files["load"], files["truncated"], *bad, "--model", run, "--json"]),
                 ("timeline", ["predict", files["long"], "--model", run, "--window", "4", "--hop", "1", "--json",
                               "--out", str(folder / "timeline")])]
        (folder / "calls.json").write_text(json.dumps(calls))
        done = subprocess.run([sys.executable, "-c", REFERENCE, str(folder / "calls.json"),
                               str(folder / "reference.json")], capture_output=True, text=True, timeout=300,
                              env=_env())
        assert done.returncode == 0, done.stderr[-3000:]
        reference = json.loads((folder / "reference.json").read_text())
        deadline = time.monotonic() + 180
        while "http://" not in (folder / "server.log").read_text():
            assert process.poll() is None, (folder / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "msir serve did not print its URL within 180 s"
            time.sleep(0.2)
        line = (folder / "server.log").read_text()
        url = line[line.index("http://"):].split()[0].rstrip("/")
        yield url, process, folder / "log", reference
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


class FakeDetector:
    """`Detector.score` and `probabilities` without a model: each row tells its batch's size and order."""

    def __init__(self):
        self.calls = []

    def score(self, features):
        lengths = [len(f["x"]) for f in features]
        self.calls.append(lengths)
        return [{"batch": len(features), "length": n} for n in lengths]


def test_the_batcher_buckets_concurrent_requests_by_length():
    import asyncio

    from msir_keras.service.batcher import Batcher

    detector = FakeDetector()

    async def main():
        batcher = Batcher(detector, batch_size=16, max_wait=1.0)
        batcher.start()
        lengths = np.random.default_rng(0).permutation(40) + 1

        async def request(n, delay):
            with batcher.expect():
                await asyncio.sleep(delay)  # extraction
                return await batcher.score({"x": np.zeros((n, 3))})

        # 40 requests whose features arrive over 20 ms: 3 forward passes, each sorted by length.
        results = await asyncio.gather(*[request(int(n), i / 2000) for i, n in enumerate(lengths)])
        assert [r["length"] for r in results] == list(lengths)
        assert [len(c) for c in detector.calls] == [16, 16, 8] and all(c == sorted(c) for c in detector.calls)
        assert sorted(sum(detector.calls, [])) == list(range(1, 41))
        # A lone request is scored at once; one cancelled before its pass is dropped unscored.
        started = time.monotonic()
        assert (await request(5, 0))["batch"] == 1 and time.monotonic() - started < 0.5
        with batcher.expect():
            left = asyncio.ensure_future(batcher.score({"x": np.zeros((7, 3))}))
            await asyncio.sleep(0)
            left.cancel()
        assert (await request(9, 0.05))["batch"] == 1 and detector.calls[-1] == [9]
        assert batcher.scored == 42 and batcher.batches == len(detector.calls)
        await batcher.stop()

    asyncio.run(main())


def _post(url, path, name=None, key=KEY, raw=False, **kwargs):
    data = pathlib.Path(path).read_bytes()
    headers = {"X-API-Key": key} if key else {}
    if raw:
        return requests.post(url, data=data, headers={**headers, "Content-Type": "audio/wav"}, timeout=60, **kwargs)
    return requests.post(url, files={"file": (name or os.path.basename(path), data, "audio/wav")}, headers=headers,
                         timeout=60, **kwargs)


def _cli_rows(reference):
    return {row["path"]: row for row in json.loads(reference["predict"]["out"])}


def _cli_reasons(reference):
    """{path: reason} of the files `msir predict` refused, from its one line each."""
    reasons = {}
    for line in reference["predict"]["err"].splitlines():
        if line.startswith("msir predict: ") and ": " in line[14:] and "file(s) failed" not in line:
            path, reason = line[14:].split(": ", 1)
            reasons[path] = reason
    return reasons


def _assert_same(answer, row):
    """A /v1/predict answer against `msir predict`'s row for the same file."""
    assert answer["predicted"] == row["predicted"]
    for name, p in answer["probabilities"].items():
        assert p == pytest.approx(row[f"p_{name}"], abs=1e-5), name
        assert answer["decisions"][name] == row[name]


def test_health_needs_no_key_and_describes_the_model(server):
    url, *_ = server
    health = requests.get(f"{url}/v1/health", timeout=10).json()
    assert health["classes"] == {"classification": ["angry", "happy", "neutral", "sad"]}
    assert health["branches"] and health["upstream"] == "off" and health["corpus"]["corpus"] == "manifest"
    assert health["version"] and health["api_key_required"] is True
    assert health["limits"] == {"max_mb": MAX_MB, "max_seconds": MAX_SECONDS}
    page = requests.get(f"{url}/", timeout=10)
    assert page.status_code == 200 and "/static/app.js" in page.text and "http" not in page.text.split("<body")[0]


def test_predict_equals_msir_predict_multipart_and_raw(server, files):
    url, _, _, reference = server
    rows = _cli_rows(reference)
    path = files["load"][0]
    answer = _post(f"{url}/v1/predict", path)
    assert answer.status_code == 200, answer.text
    answer = answer.json()
    assert answer["name"] == os.path.basename(path) and answer["warnings"] == []
    assert answer["duration"] == pytest.approx(soundfile.info(path).duration, abs=1e-3)
    _assert_same(answer, rows[path])
    raw = _post(f"{url}/v1/predict", path, raw=True)
    assert raw.status_code == 200 and raw.json()["name"] == "upload"
    _assert_same(raw.json(), rows[path])
    # A truncated copy: predicted as `msir predict` predicts it, with its warning.
    warned = _post(f"{url}/v1/predict", files["truncated"]).json()
    _assert_same(warned, rows[files["truncated"]])
    assert len(warned["warnings"]) == 1 and warned["warnings"][0].startswith("truncated:")


def test_timeline_equals_msir_predict_window(server, files):
    url, _, _, reference = server
    expected = json.loads(reference["timeline"]["out"])["windows"]
    answer = _post(f"{url}/v1/timeline?window=4&hop=1", files["long"])
    assert answer.status_code == 200, answer.text
    windows = answer.json()["windows"]
    assert len(windows) == len(expected) > 3
    for got, want in zip(windows, expected):
        assert set(got) == set(want)
        for key, value in want.items():
            assert got[key] == (pytest.approx(value, abs=1e-5) if isinstance(value, float) else value), key


def test_bad_input_gets_the_clis_reason_and_status(server, files):
    url, _, _, reference = server
    reasons = _cli_reasons(reference)
    for kind, path in files["bad"].items():
        answer = _post(f"{url}/v1/predict", path)
        assert answer.status_code == 422, (kind, answer.text)
        # The CLI names the file by its path where the server names the upload by its name.
        assert answer.json() == {"error": reasons[str(path)].replace(str(path), path.name)}, kind
    too_long = _post(f"{url}/v1/predict", files["long"])
    assert too_long.status_code == 413 and "/v1/timeline" in too_long.json()["error"]
    big = requests.post(f"{url}/v1/predict", data=b"\0" * (MAX_MB * 2**20 + 1), timeout=30,
                        headers={"X-API-Key": KEY, "Content-Type": "audio/wav"})
    assert big.status_code == 413 and "--max-mb" in big.json()["error"]

    def chunks():  # no Content-Length: the counted stream stops it
        for _ in range(3):
            yield b"\0" * (MAX_MB * 2**20 // 2 + 1)

    streamed = requests.post(f"{url}/v1/predict", data=chunks(), timeout=30, headers={"X-API-Key": KEY})
    assert streamed.status_code == 413
    window = _post(f"{url}/v1/timeline?window=-1", files["load"][0])
    assert window.status_code == 400 and "window" in window.json()["error"]
    no_file = requests.post(f"{url}/v1/predict", files={"audio": ("a.wav", b"RIFF")}, headers={"X-API-Key": KEY},
                            timeout=10)
    assert no_file.status_code == 400 and "'file'" in no_file.json()["error"]
    assert requests.get(f"{url}/v1/health", timeout=10).status_code == 200  # still serving


def test_the_api_key(server, files):
    url, *_ = server
    path = files["load"][1]
    assert _post(f"{url}/v1/predict", path, key=None).status_code == 401
    wrong = _post(f"{url}/v1/predict", path, key="wrong")
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
    assert _post(f"{url}/v1/timeline", path, key=None).status_code == 401
    bearer = requests.post(f"{url}/v1/predict", files={"file": open(path, "rb")},
                           headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert bearer.status_code == 200


def test_a_client_that_leaves_frees_its_work(server, files):
    url, _, log_dir, _ = server
    host, port = url.removeprefix("http://").split(":")
    body = pathlib.Path(files["long"]).read_bytes()
    before = requests.get(f"{url}/v1/health", timeout=10).json()["window_batches"]
    # A timeline of ~2600 windows, 82 forward passes of 32; the client closes its socket once it has sent it.
    windows = int(soundfile.info(files["long"]).duration / 0.005)
    with socket.create_connection((host, int(port))) as client:
        client.sendall(f"POST /v1/timeline?window=1&hop=0.005 HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY}\r\n"
                       f"Content-Type: audio/wav\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.1)
    deadline = time.monotonic() + 30
    while True:
        lines = [json.loads(line) for line in (log_dir / "requests.jsonl").read_text().splitlines()]
        left = [line for line in lines if line["status"] == 499]
        if left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left and left[0]["path"] == "/v1/timeline", lines[-3:]
    time.sleep(0.5)
    passes = requests.get(f"{url}/v1/health", timeout=10).json()["window_batches"] - before
    assert passes < windows / 32 / 2, passes  # stopped between forward passes, far from its end


def test_load_many_clients_equal_results(server, files):
    url, _, _, reference = server
    rows = _cli_rows(reference)
    before = requests.get(f"{url}/v1/health", timeout=10).json()

    def client(index):
        with requests.Session() as session:
            answers = []
            for path in [files["load"][(index + i) % LOAD_FILES] for i in range(PER_CLIENT)]:
                response = session.post(f"{url}/v1/predict", headers={"X-API-Key": KEY}, timeout=120,
                                        files={"file": (os.path.basename(path), open(path, "rb").read())})
                answers.append((path, response.status_code, response.json()))
            return answers

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [a for chunk in pool.map(client, range(CLIENTS)) for a in chunk]
    assert len(answers) == CLIENTS * PER_CLIENT
    assert all(status == 200 for _, status, _ in answers), [a for a in answers if a[1] != 200][:3]
    for path, _, answer in answers:
        _assert_same(answer, rows[path])
    after = requests.get(f"{url}/v1/health", timeout=10).json()
    scored, batches = after["scored"] - before["scored"], after["batches"] - before["batches"]
    assert scored == len(answers) and batches < scored  # requests shared forward passes


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="no chromium and chromedriver here (apt-get install chromium chromium-driver; CI does)")
def test_the_page_in_a_headless_browser(server, files, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _, _, reference = server
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,1250",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"):  # a microphone: a beep
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    try:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.ID, "model").text.startswith("Model:"))
        driver.find_element(By.ID, "api-key").send_keys(KEY)  # shown: the server requires a key
        path = files["load"][0]
        driver.find_element(By.ID, "file").send_keys(path)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 4)
        row = _cli_rows(reference)[path]
        shown = {bar.get_attribute("data-emotion"): bar.find_element(By.CLASS_NAME, "value").text
                 for bar in driver.find_elements(By.CSS_SELECTOR, "#bars .bar")}
        assert shown == {e: f"{row[f'p_{e}']:.3f}" for e in shown}
        assert f"predicted: {row['predicted']}" in driver.find_element(By.ID, "summary").text
        driver.save_screenshot(str(tmp_path / "serve-predict.png"))
        # The microphone (Chromium's fake one): recorded, written as wav by the page, predicted.
        driver.find_element(By.ID, "record").click()
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Recording"))
        time.sleep(2)
        driver.find_element(By.ID, "record").click()
        wait.until(lambda d: d.find_element(By.ID, "result-title").text == "recording.wav")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 4
        assert "predicted:" in driver.find_element(By.ID, "summary").text
        # A recording over the predict limit: the page asks for its timeline and draws it.
        driver.find_element(By.ID, "file").send_keys(files["long"])
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#timeline polyline")) == 4)
        driver.save_screenshot(str(tmp_path / "serve-page.png"))
        assert driver.find_element(By.ID, "status").text == ""
    finally:
        driver.quit()
    assert (tmp_path / "serve-page.png").stat().st_size > 10_000
    if os.environ.get("MSIR_SCREENSHOTS"):  # refresh the README's copy: MSIR_SCREENSHOTS=docs/images
        for name in ("serve-page.png", "serve-predict.png"):
            shutil.copy(tmp_path / name, pathlib.Path(os.environ["MSIR_SCREENSHOTS"]) / name)


def test_sigterm_shuts_down_cleanly(server):
    url, process, log_dir, _ = server
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert [p.name for p in log_dir.iterdir()] == ["requests.jsonl"]  # nothing else written
