#!/usr/bin/env python3
"""`latte serve` checked with OpenAI's official Python client, a bounded load test, and the web
page in a real browser (Debian's headless chromium through selenium and chromedriver).

    python3 tools/serve_check.py [--latte target/debug/latte] [--out DIR] [--no-browser]

1. The client against the demo model: models.list; images.generate (the PNG decodes and is red
   where a red circle is asked for); chat with that image (the answer names the colour); the same
   request streamed gives the same text; every error status (400, 401, 404, 413, 503) raises the
   client's own exception class.
2. Load: 100 chat requests, 8 at a time, over loopback. All must succeed; p50 / p95 latency are
   printed; the server's RSS after must be within 64 MiB of its RSS before (measured after a
   warm-up, so that allocator pools and lazily mapped weights are already in).
3. The page: generate an image by clicking, then ask about it; the streamed answer must name the
   colour; a screenshot is written to DIR/serve-page.png and checked for the red circle.

Needs: pip install -r tools/requirements-ci.txt; apt-get install chromium chromium-driver.
"""

import argparse
import base64
import io
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
from PIL import Image

RSS_MARGIN = 64 << 20


class Server:
    def __init__(self, latte, *args):
        self.process = subprocess.Popen(
            [latte, "serve", "--port", "0", "--device", "cpu", *args],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        deadline = time.time() + 300
        for line in self.process.stderr:
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                self.url = match.group(1)
                break
            if time.time() > deadline:
                raise SystemExit("the server printed no address")
        else:
            raise SystemExit("the server exited before listening")
        # Keep reading stderr so that the server never blocks on a full pipe.
        self.log = []
        threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True).start()

    def client(self, key="none"):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=600)

    def rss(self):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise SystemExit("no VmRSS")

    def stop(self):
        self.process.terminate()
        code = self.process.wait(timeout=120)
        if code != 0:
            raise SystemExit(f"the server exited with {code} on SIGTERM")


def png_of(b64):
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


def is_red(pixel):
    r, g, b = pixel
    return r > 150 and g < 100 and b < 100


def red_fraction(image, box=None):
    region = image.crop(box) if box else image
    data = region.tobytes()
    pixels = [tuple(data[i:i + 3]) for i in range(0, len(data), 3)]
    return sum(map(is_red, pixels)) / len(pixels)


def image_message(png_b64, question):
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + png_b64}},
        {"type": "text", "text": question}]}]


def expect(exception, call, status):
    try:
        call()
    except exception as e:
        if getattr(e, "status_code", None) != status:
            raise SystemExit(f"expected {status}, got {e.status_code}: {e}")
        return e
    raise SystemExit(f"expected {exception.__name__} ({status}), the call succeeded")


def client_checks(latte):
    server = Server(latte, "--api-key", "sesame", "--max-body", "64K")
    client = server.client("sesame")
    models = client.models.list()
    assert [m.id for m in models.data] == ["latte-demo"], models
    model = models.data[0].id

    made = client.images.generate(model=model, prompt="a red circle", size="64x64",
                                  response_format="b64_json", extra_body={"seed": 0, "steps": 20})
    png = made.data[0].b64_json
    image = png_of(png)
    assert image.size == (64, 64), image.size
    # The demo draws one shape of the asked colour on white: several percent of the pixels.
    red = red_fraction(image)
    assert red > 0.03, red
    print(f"images.generate: 64x64 PNG, {red:.1%} of its pixels red")

    answer = client.chat.completions.create(model=model, temperature=0, max_tokens=8,
                                            messages=image_message(png, "What colour is it?"))
    text = answer.choices[0].message.content
    assert text == "red", text
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    stream = client.chat.completions.create(model=model, temperature=0, max_tokens=8, stream=True,
                                            messages=image_message(png, "What colour is it?"))
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == text, (streamed, text)
    print(f"chat with the image: {text!r}, streamed the same")

    expect(openai.BadRequestError, lambda: client.chat.completions.create(
        model=model, messages=image_message("@@@", "hi")), 400)
    expect(openai.BadRequestError, lambda: client.chat.completions.create(
        model=model, messages=image_message(base64.b64encode(b"not an image").decode(), "hi")), 400)
    expect(openai.BadRequestError, lambda: client.chat.completions.create(
        model=model, temperature=5, messages=[{"role": "user", "content": "hi"}]), 400)
    expect(openai.BadRequestError, lambda: client.images.generate(
        model=model, prompt="x", size="1024x1024"), 400)
    expect(openai.AuthenticationError, lambda: server.client("wrong").models.list(), 401)
    expect(openai.NotFoundError, lambda: client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]), 404)
    expect(openai.APIStatusError, lambda: client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "x" * 100_000}]), 413)
    server.stop()

    # 503: one slot, no queue, a long generation holding it.
    busy = Server(latte, "--parallel", "1", "--queue", "0")
    client = busy.client()
    holder = threading.Thread(target=lambda: expect_gone(client), daemon=True)
    holder.start()
    deadline = time.time() + 60
    while json.load(urllib.request.urlopen(busy.url + "/health"))["requests"] != 1:
        if time.time() > deadline:
            raise SystemExit("the long generation never started")
        time.sleep(0.05)
    try:
        client.chat.completions.create(model=model, max_tokens=1,
                                       messages=[{"role": "user", "content": "hi"}])
        raise SystemExit("a request got in while the only slot was busy and the queue empty")
    except openai.InternalServerError as e:
        assert e.status_code == 503, e
    busy.process.kill()
    busy.process.wait()
    print("errors: 400 (bad base64, not an image, out of range, size), 401, 404, 413, 503 raised as the client's exceptions")


def expect_gone(client):
    try:
        client.images.generate(prompt="a red circle", extra_body={"steps": 10000})
    except openai.APIError:
        pass


def load_test(latte, total=100, concurrency=8):
    server = Server(latte, "--parallel", "4", "--queue", "64")
    client = server.client()
    png = client.images.generate(prompt="a red circle", extra_body={"seed": 0, "steps": 20}).data[0].b64_json
    questions = [image_message(png, "What colour is it?"), image_message(png, "What shape is it?"),
                 [{"role": "user", "content": "What colour is it?"}]]

    def one(k):
        started = time.perf_counter()
        response = client.chat.completions.create(
            model="latte-demo", temperature=0, max_tokens=8, messages=questions[k % len(questions)])
        assert response.choices[0].message.content, response
        return time.perf_counter() - started

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(2 * concurrency)))  # warm-up
        before = server.rss()
        started = time.perf_counter()
        latencies = list(pool.map(one, range(total)))
        wall = time.perf_counter() - started
    after = server.rss()
    latencies.sort()
    p50 = statistics.median(latencies)
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(f"load: {total} requests, {concurrency} at a time, all succeeded in {wall:.1f} s "
          f"({total / wall:.1f} req/s); latency p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms; "
          f"RSS before {before / 2**20:.1f} MiB, after {after / 2**20:.1f} MiB")
    if after > before + RSS_MARGIN:
        raise SystemExit(f"RSS grew by {(after - before) / 2**20:.1f} MiB (margin {RSS_MARGIN >> 20} MiB)")
    server.stop()


def browser_check(latte, out):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # chromedriver and chromium are Debian's, named below: Selenium Manager must not look online.
    os.environ.setdefault("SE_OFFLINE", "true")
    server = Server(latte)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1000,1200"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(server.url + "/")
        wait = WebDriverWait(driver, 300)
        wait.until(lambda d: d.find_element(By.ID, "model").text == "model: latte-demo")
        prompt = driver.find_element(By.ID, "image-prompt")
        prompt.clear()
        prompt.send_keys("a red circle")
        driver.find_element(By.ID, "make").click()
        made = wait.until(lambda d: d.find_elements(By.ID, "made-image"))[0]
        steps = driver.find_element(By.ID, "steps")
        assert steps.get_attribute("value") == steps.get_attribute("max"), "progress did not reach the end"
        driver.find_element(By.ID, "ask").click()
        answer = driver.find_element(By.ID, "answer")
        wait.until(lambda d: answer.get_attribute("data-done") == "true")
        assert answer.text == "red", answer.text
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, "serve-page.png")
        driver.save_screenshot(path)
        shot = Image.open(path).convert("RGB")
        # The made image (256 px on the page) shows the red circle.
        rect = made.rect
        scale = shot.size[0] / driver.execute_script("return window.innerWidth")
        box = tuple(int(v * scale) for v in (rect["x"], rect["y"], rect["x"] + rect["width"], rect["y"] + rect["height"]))
        red = red_fraction(shot, box)
        assert red > 0.03, (box, red)
        print(f"browser: generated by click, asked, streamed answer {answer.text!r}; screenshot {path} "
              f"({shot.size[0]}x{shot.size[1]}; {red:.1%} of the made image's area red)")
    finally:
        driver.quit()
        server.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--latte", default="target/debug/latte")
    parser.add_argument("--out", default="target/serve-check")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    client_checks(args.latte)
    load_test(args.latte)
    if not args.no_browser:
        browser_check(args.latte, args.out)


if __name__ == "__main__":
    main()
