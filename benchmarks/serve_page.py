"""The README's picture of `msir serve`'s page: a long EmoDB recording's emotion timeline, from a real run.

Builds one recording from a speaker's EmoDB utterances in blocks of one
emotion each (angry, sad, happy, neutral), serves a trained run with
`msir serve`, uploads the recording in headless Chromium (Debian's
`chromium` and `chromedriver`, driven by selenium) and saves the page as a
PNG. The run's fold models saw the other folds' speakers in training, so
the picture shows what the page draws, not a held-out score.

Usage: python benchmarks/serve_page.py --model RUN [--speaker 03] [--out docs/images/serve-page.png]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
EMODB = os.path.join(HERE, "..", "..", "shared", "data", "emodb")
BLOCKS = ("angry", "sad", "happy", "neutral")


def recording(speaker, path, seconds_per_block=18.0):
    """Writes `path`: the speaker's utterances, emotion by emotion, 0.3 s apart; returns the blocks' spans."""
    import soundfile

    from msir_keras.audio import SAMPLE_RATE, read_audio
    from msir_keras.corpora import load_emodb

    table = load_emodb(EMODB, emotions="four").utterances
    pieces, spans, now = [], [], 0.0
    gap = np.zeros(int(0.3 * SAMPLE_RATE), np.float32)
    for emotion in BLOCKS:
        start = now
        for file in table[(table["speaker"] == speaker) & (table["label"] == emotion)]["path"]:
            signal = read_audio(file)
            pieces += [signal, gap]
            now += (len(signal) + len(gap)) / SAMPLE_RATE
            if now - start >= seconds_per_block:
                break
        spans.append((emotion, start, now))
    soundfile.write(path, np.concatenate(pieces), SAMPLE_RATE)
    return spans


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a run folder (or an export)")
    parser.add_argument("--speaker", default="03")
    parser.add_argument("--out", default=os.path.join(HERE, "..", "docs", "images", "serve-page.png"))
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    folder = tempfile.mkdtemp(prefix="msir-serve-page-")
    audio = os.path.join(folder, f"emodb-speaker{args.speaker}.wav")
    for emotion, start, end in recording(args.speaker, audio):
        print(f"{emotion:>8}: {start:5.1f}-{end:5.1f} s")
    log = open(os.path.join(folder, "server.log"), "w+")
    # A predict limit under the recording's length: the page draws its timeline.
    server = subprocess.Popen([sys.executable, "-m", "msir_keras.cli", "serve", "--model", args.model, "--port", "0",
                               "--max-seconds", "30"], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        while "http://" not in open(log.name).read():
            if server.poll() is not None:
                raise SystemExit(open(log.name).read())
            time.sleep(0.5)
        line = next(line for line in open(log.name) if "http://" in line)
        url = line[line.index("http://"):].split()[0].rstrip("/")
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,1250"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
        try:
            driver.get(url + "/")
            wait = WebDriverWait(driver, 300)
            wait.until(lambda d: d.find_element(By.ID, "model").text.startswith("Model:"))
            driver.find_element(By.ID, "file").send_keys(audio)
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#timeline polyline")) > 0)
            time.sleep(0.5)
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            driver.save_screenshot(args.out)
        finally:
            driver.quit()
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
