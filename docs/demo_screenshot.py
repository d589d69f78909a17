"""Draws docs/demo.png: the demo page of a run, with real samples, in headless Chromium.

    python docs/demo_screenshot.py --workdir runs/scenes_t2i [--out docs/demo.png] [--prompts "a red circle" ...]

Starts `python -m ar_jax.demo` on a free 127.0.0.1 port, submits the prompts, waits for the samples and saves a
screenshot (Debian's chromium and chromium-driver, Selenium: the `[demo]` extra).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/scenes_t2i")
    parser.add_argument("--out", default="docs/demo.png")
    parser.add_argument("--prompts", nargs="+", default=["a red circle above a blue square", "three green triangles"])
    parser.add_argument("--per_prompt", type=int, default=4)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "ar_jax.demo", "--workdir", args.workdir, "--port", str(port)],
                              env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(1)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--no-first-run", "--window-size=1280,1000"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        driver.get(url)
        wait = WebDriverWait(driver, 300, poll_frequency=0.5)
        box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#prompts textarea"))
        box.clear()
        box.send_keys("\n".join(args.prompts))
        slider = driver.find_element(By.CSS_SELECTOR, "input[type=number]")  # the first: images per prompt
        slider.clear()
        slider.send_keys(str(args.per_prompt))
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: "image(s)" in d.find_element(By.ID, "status").text)
        time.sleep(2)
        driver.save_screenshot(args.out)
        driver.quit()
        print(f"wrote {args.out}")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
