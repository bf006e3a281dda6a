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


PLACES = {}  # the server's working folder, HOME and TMPDIR, and what HOME and TMPDIR held once it had started


def _listing(folder):
    return sorted(str(p.relative_to(folder.parent)) for p in folder.rglob("*"))


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
    loud = write_wav(str(folder / "loud.wav"), np.full(8000, 100.0, np.float32), subtype="FLOAT")
    bad["out-of-range"] = pathlib.Path(loud)  # float samples of 100: each extractor refuses them
    bad["unreadable"].write_bytes(b"RIFF1234WAVEjunk")
    bad["empty"].write_bytes(b"")
    truncated = folder / "truncated.wav"
    truncated.write_bytes(data[:-2000])  # its header declares 2000 bytes more: a warning, still predicted
    bomb = folder / "bomb.flac"  # 10 minutes of 48 kHz stereo silence in about 110 KB
    with soundfile.SoundFile(str(bomb), "w", 48000, 2, format="FLAC") as handle:
        for _ in range(60):
            handle.write(np.zeros((480000, 2), np.float32))
    return {"load": load, "long": write_wav(str(folder / "long.wav"), long), "bad": bad,
            "truncated": str(truncated), "folder": folder, "bomb": str(bomb)}


@pytest.fixture(scope="module")
def server(runs, files, tmp_path_factory):
    """(base URL, process, log dir, `msir predict`'s results): the server, started once for the module."""
    run = str(runs["classification"])
    folder = tmp_path_factory.mktemp("serve")
    # Its own working folder, HOME and TMPDIR, all empty: whatever it writes there shows (the last test).
    cwd, home, tmp = (tmp_path_factory.mktemp(name) for name in ("serve-cwd", "serve-home", "serve-tmp"))
    log = open(folder / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "msir_keras.cli", "serve", "--model", run, "--port", "0", "--api-key", KEY,
         "--max-seconds", str(MAX_SECONDS), "--max-mb", str(MAX_MB), "--max-timeline-minutes", "1",
         "--log-dir", "log"],
        stdout=log, stderr=subprocess.STDOUT, env=dict(_env(), HOME=str(home), TMPDIR=str(tmp)), cwd=cwd)
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
        PLACES.update(cwd=cwd, home=home, tmp=tmp, written=_listing(home) + _listing(tmp))
        yield url, process, cwd / "log", reference
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


class FakeDetector:
    """`Detector.score` without a model: each row tells its batch's size and padded length; "bad" inputs raise."""

    def __init__(self):
        self.calls = []

    def score(self, features):
        lengths = [len(f["x"]) for f in features]
        self.calls.append(lengths)
        if any("bad" in f for f in features):
            raise RuntimeError("a forward pass failed")
        return [{"batch": len(features), "padded": max(lengths), "length": n} for n in lengths]


def test_the_batcher_buckets_concurrent_requests_by_length():
    import asyncio

    from msir_keras.service.batcher import Batcher

    detector = FakeDetector()

    async def main():
        batcher = Batcher(detector, batch_size=16, max_wait=1.0)
        batcher.start()

        async def request(n, delay, **extra):
            with batcher.expect():
                await asyncio.sleep(delay)  # extraction
                return await batcher.score({"x": np.zeros((n, 3)), **extra})

        # 32 requests at once, 1 s and 30 s (100 and 3000 frames) in turn: two passes, the short ones
        # together and the long ones together (16 in arrival order would mix them, 8 and 8 in each pass).
        lengths = [100, 3000] * 16
        results = await asyncio.gather(*[request(n, 0) for n in lengths])
        assert [r["length"] for r in results] == lengths
        assert sorted(detector.calls) == [[100] * 16, [3000] * 16]
        assert all(r["padded"] == r["length"] for r in results)  # no 1 s request padded to 30 s
        # A lone request is scored at once; one cancelled before its pass is dropped unscored.
        started = time.monotonic()
        assert (await request(5, 0))["batch"] == 1 and time.monotonic() - started < 0.5
        with batcher.expect():
            left = asyncio.ensure_future(batcher.score({"x": np.zeros((7, 3))}))
            await asyncio.sleep(0)
            left.cancel()
        assert (await request(9, 0.05))["batch"] == 1 and detector.calls[-1] == [9]
        assert batcher.scored == 34 and batcher.batches == len(detector.calls)
        # A pass that raises is run again one input at a time: only the bad input fails.
        answers = await asyncio.gather(*[request(10 + i, i / 2000, **({"bad": 1} if i == 2 else {}))
                                         for i in range(4)], return_exceptions=True)
        assert [type(a).__name__ for a in answers] == ["dict", "dict", "RuntimeError", "dict"]
        assert all(a["batch"] == 1 for a in answers if isinstance(a, dict))
        await batcher.stop()

    asyncio.run(main())


class BrokenDetector:
    """What `create_app` reads of a detector, and an `extract` with a bug whose message holds a server path."""

    feature_config, class_names, models, threshold, extractors, min_window = {}, {"c": ["a", "b"]}, [1], 0.5, {}, 0.025

    def extract(self, signals):
        raise RuntimeError("/srv/secret/run/model: no such thing")


def _call(app, method, path, body=b"", headers=()):
    """(status, body) of one request to an ASGI app, in this process (no server, no HTTP client)."""
    import asyncio

    async def main():
        sent, messages = [], [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "query_string": b"", "root_path": "",
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers], "scheme": "http",
                 "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "http_version": "1.1"}
        try:
            await app(scope, receive, send)
        except RuntimeError:
            pass  # Starlette raises a 500's error again after answering, for the server to log
        start = next(m for m in sent if m["type"] == "http.response.start")
        return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")

    return asyncio.run(main())


def test_a_bug_answers_an_id_not_its_details_and_an_empty_key_is_refused(tmp_path, capsys, monkeypatch):
    import io

    from msir_keras.cli import main
    from msir_keras.service import Limits, create_app

    app = create_app(BrokenDetector(), "/srv/secret/run", Limits(log_dir=str(tmp_path)))
    wav = io.BytesIO()
    soundfile.write(wav, tone(0.5), 16000, format="WAV")
    status, body = _call(app, "POST", "/v1/predict", wav.getvalue(), [("content-type", "audio/wav")])
    error = json.loads(body)["error"]
    assert status == 500 and "/srv" not in error and "RuntimeError" not in error, error
    error_id = error.split()[2].rstrip(":")
    assert f"error {error_id}" in capsys.readouterr().err  # the details: stderr and the log, under the id
    logged = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert any(e.get("error_id") == error_id and "/srv/secret" in e.get("error", "") for e in logged), logged
    assert any(e.get("error_id") == error_id and e.get("status") == 500 for e in logged), logged
    # An empty key (`--api-key "$KEY"` with KEY unset, or MSIR_API_KEY="") is refused, not taken as none.
    with pytest.raises(ValueError, match="empty"):
        create_app(BrokenDetector(), "run", Limits(api_key=""))
    assert main(["serve", "--model", "nowhere", "--api-key", ""]) == 2
    monkeypatch.setenv("MSIR_API_KEY", "")
    assert main(["serve", "--model", "nowhere"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("msir serve: error: the API key is empty") for line in lines), lines


def test_an_unsized_wav_is_bounded_by_its_body():
    import io

    from msir_keras.service.uploads import RequestProblem, declared_seconds

    wav = io.BytesIO()
    soundfile.write(wav, np.zeros(160000, np.float32), 16000, subtype="PCM_16", format="WAV")  # 10 s
    data = bytearray(wav.getvalue())
    at = data.index(b"data")
    data[at + 4 : at + 8] = bytes(4)  # a recorder that never wrote the data size: the header cannot say
    assert declared_seconds(bytes(data), "u", 12, str) == pytest.approx(10, abs=0.01)
    with pytest.raises(RequestProblem) as refused:
        declared_seconds(bytes(data), "u", 8, lambda seconds: f"{seconds:.1f} s")
    assert refused.value.status == 413 and refused.value.reason == "10.0 s"


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
    assert health["limits"] == {"max_mb": MAX_MB, "max_seconds": MAX_SECONDS, "max_timeline_minutes": 1}
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
        assert answer.json()["error"] == reasons[str(path)].replace(str(path), path.name), kind
        assert set(answer.json()) == ({"error", "warnings"} if kind == "out-of-range" else {"error"}), kind
    assert _post(f"{url}/v1/predict", files["bad"]["out-of-range"]).json()["warnings"][0].startswith("a constant signal")
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
    for query, words in [("window=-1", "window must be a positive number"),
                         ("window=4_0", "window must be a positive number"),
                         ("window=0.001&hop=1", "window must be at least 0.025 s"),
                         ("hop=1e-300", "hop must be at least 0.001 s")]:
        window = _post(f"{url}/v1/timeline?{query}", files["load"][0])
        assert window.status_code == 400 and window.json()["error"].startswith(words), (query, window.text)
        assert len(window.json()["error"]) < 100, window.text
    loud = _post(f"{url}/v1/timeline", files["bad"]["out-of-range"])
    assert loud.status_code == 422 and loud.json()["error"].startswith(reasons[str(files["bad"]["out-of-range"])])
    no_file = requests.post(f"{url}/v1/predict", files={"audio": ("a.wav", b"RIFF")}, headers={"X-API-Key": KEY},
                            timeout=10)
    assert no_file.status_code == 400 and "'file'" in no_file.json()["error"]
    assert requests.get(f"{url}/v1/health", timeout=10).status_code == 200  # still serving


def test_a_decompression_bomb_is_refused_from_its_header(server, files):
    url, process, _, _ = server

    def peak_mb():  # the server's peak resident memory so far
        status = pathlib.Path(f"/proc/{process.pid}/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024

    before = peak_mb()
    # 110 KB of FLAC that decodes to 10 minutes of 48 kHz stereo (220 MB of float32, more resampled).
    predict = _post(f"{url}/v1/predict", files["bomb"])
    assert predict.status_code == 413 and predict.json()["error"].startswith("600.0 s of audio, longer than")
    assert "/v1/timeline" in predict.json()["error"]
    timeline = _post(f"{url}/v1/timeline", files["bomb"])
    assert timeline.status_code == 413 and "--max-timeline-minutes" in timeline.json()["error"], timeline.text
    assert timeline.json()["error"].startswith("10.0 minutes of audio, longer than /v1/timeline's limit of 1 minutes")
    assert peak_mb() - before < 100, (before, peak_mb())  # nothing decoded


def test_the_api_key(server, files):
    url, *_ = server
    path = files["load"][1]
    assert _post(f"{url}/v1/predict", path, key=None).status_code == 401
    wrong = _post(f"{url}/v1/predict", path, key="wrong")
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
    assert _post(f"{url}/v1/timeline", path, key=None).status_code == 401
    for scheme in ("Bearer", "bearer", "BEARER"):
        bearer = requests.post(f"{url}/v1/predict", files={"file": open(path, "rb")},
                               headers={"Authorization": f"{scheme} {KEY}"}, timeout=60)
        assert bearer.status_code == 200, scheme
    bare = requests.post(f"{url}/v1/predict", files={"file": open(path, "rb")}, headers={"Authorization": KEY},
                         timeout=60)
    assert bare.status_code == 401  # the key without its scheme
    assert requests.get(f"{url}/v1/health/", timeout=10).json()["status"] == "ok"  # a trailing slash: public too
    # What the server does not serve answers in the same JSON shape.
    for method, status, where in (("GET", 405, "/v1/predict"), ("GET", 404, "/v1/nothing")):
        answer = requests.request(method, f"{url}{where}", headers={"X-API-Key": KEY}, timeout=10)
        assert answer.status_code == status and "the API is" in answer.json()["error"], answer.text


def test_a_client_that_leaves_frees_its_work(server, files):
    url, _, log_dir, _ = server
    host, port = url.removeprefix("http://").split(":")
    body = pathlib.Path(files["long"]).read_bytes()
    before = requests.get(f"{url}/v1/health", timeout=10).json()

    def left():
        lines = [json.loads(line) for line in (log_dir / "requests.jsonl").read_text().splitlines()]
        return lines, [line["path"] for line in lines if line["status"] == 499]

    before_left = len(left()[1])

    # Two timelines of ~2600 windows each (82 forward passes of 32), from clients that wait for them.
    windows = int(soundfile.info(files["long"]).duration / 0.005)
    clients = [socket.create_connection((host, int(port))) for _ in range(2)]
    for client in clients:
        client.sendall(f"POST /v1/timeline?window=1&hop=0.005 HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY}\r\n"
                       f"Content-Type: audio/wav\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    time.sleep(0.3)
    # Meanwhile a predict is answered: timelines have their own thread, not the predicts' (one runs, one waits).
    assert _post(f"{url}/v1/predict", files["load"][2]).status_code == 200
    for client in clients:
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.recv(1)  # neither timeline is done
    for client in clients:
        client.close()
    deadline = time.monotonic() + 30
    while len(left()[1]) - before_left < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    lines, paths = left()
    assert paths[before_left:] == ["/v1/timeline"] * 2, lines[-4:]
    time.sleep(0.5)
    after = requests.get(f"{url}/v1/health", timeout=10).json()
    passes = after["window_batches"] - before["window_batches"]
    assert passes < windows / 32 / 2, passes  # the first stopped between forward passes, far from its end
    assert after["timelines"] - before["timelines"] == 1  # the second, still queued, never started
    # A client that leaves in the middle of its upload: 499 in the log, not a 500.
    with socket.create_connection((host, int(port))) as client:
        client.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY}\r\n"
                       f"Content-Type: audio/wav\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:1000])
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while left()[1][before_left + 2:] != ["/v1/predict"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left()[1][before_left + 2:] == ["/v1/predict"], left()[0][-3:]


@pytest.mark.slow  # CI runs it; the quick run keeps the endpoints' own checks
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


@pytest.mark.slow
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
    # Nothing written but the request log: in its working folder, HOME and TMPDIR, since it started.
    assert [p.name for p in PLACES["cwd"].iterdir()] == ["log"]
    assert [p.name for p in log_dir.iterdir()] == ["requests.jsonl"]
    assert _listing(PLACES["home"]) + _listing(PLACES["tmp"]) == PLACES["written"]
