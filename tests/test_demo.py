"""The demo: its service refuses what it must (without a browser), and the page served on 127.0.0.1 by
`python -m ar_jax.demo`, driven in headless Chromium, turns a prompt into images of the run's size, shows a bad
prompt's and a bad image's error text, captions an upload, and keeps serving."""

import os
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from ar_jax.config import load_config_file
from ar_jax.data.scenes import generate
from ar_jax.images import save_png
from ar_jax.training import train_and_evaluate
from tests.helpers import free_port, train_both_ways_run

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A smoke run trained both ways (text-to-image and captions) on the smoke scenes tokenizer."""
    return train_both_ways_run(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def service(workdir):
    from ar_jax.demo.service import DemoService

    return DemoService(workdir, max_batch=4)


def test_service_answers_and_refuses(service):
    answer = service.generate("a red circle\ntwo blue squares", 2, seed=3)
    assert answer.images.shape == (4, 32, 32, 3) and answer.images.dtype == np.uint8
    again = service.generate("a red circle\ntwo blue squares", 2, seed=3)
    np.testing.assert_array_equal(answer.images, again.images)  # a seed fixes the images
    with pytest.raises(ValueError, match="more than this server's limit of 4"):
        service.generate("a\nb\nc", 2)
    with pytest.raises(ValueError, match="more than max_len"):
        service.generate("a red circle " * 8, 1)
    with pytest.raises(ValueError, match="no prompt given"):
        service.generate("  \n ", 1)
    with pytest.raises(ValueError, match="method 'speculative' is not offered.*--draft_workdir"):
        service.generate("a red circle", 1, method="speculative")
    images, _, _ = generate(1, seed=1)
    rows = service.caption(images[0], 3).captions
    assert len(rows) == 3 and all(isinstance(t, str) and lp < 0 for t, lp in rows)
    with pytest.raises(ValueError, match=r"this run takes uint8 images \[B >= 1, 32, 32, 3\]"):
        service.caption(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="no image given"):
        service.caption(None)
    assert "checkpoint" in service.about and "device cpu" in service.about


def test_service_refuses_bad_settings(workdir):
    from ar_jax.demo.service import DemoService

    with pytest.raises(ValueError, match="max_batch=0 must be >= 1"):
        DemoService(workdir, max_batch=0)


@pytest.fixture(scope="module")
def server(workdir):
    """`python -m ar_jax.demo` on 127.0.0.1 (a free port) until the module's tests end: its URL."""
    if not (CHROMIUM and DRIVER):
        pytest.skip("no Chromium here: install Debian's chromium and chromium-driver (.ci/run does)")
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.Popen([sys.executable, "-m", "ar_jax.demo", "--workdir", str(workdir), "--port", str(port),
                             "--max_batch", "4"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 240
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the demo server exited: {proc.stdout.read()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("the demo server did not answer within 240 s")
    yield url
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("no Chromium here: install Debian's chromium and chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1600"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout=180):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(condition)


def _generate(driver, prompt: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.CSS_SELECTOR, "#prompts textarea")
    box.clear()
    box.send_keys(prompt)
    driver.find_element(By.ID, "generate").click()


def test_page_prompt_to_images_and_errors(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server)
    about = _wait(browser, lambda d: d.find_element(By.ID, "about").text)
    assert "checkpoint" in about and "step 4" in about and "device cpu" in about

    _generate(browser, "a red circle")
    sizes = lambda d: [(i.get_property("naturalWidth"), i.get_property("naturalHeight"))
                       for i in d.find_elements(By.CSS_SELECTOR, "#samples img")]
    got = _wait(browser, lambda d: [s for s in sizes(d) if s[0]] or None)
    assert set(got) == {(32, 32)}  # images of the run's size (4 per prompt: the slider's default)

    _generate(browser, "a red circle " * 8)  # over-long: the library's own message, shown on the page
    text = _wait(browser, lambda d: "more than max_len" in d.find_element(By.ID, "status").text
                 and d.find_element(By.ID, "status").text)
    assert "shorten the prompt" in text

    _generate(browser, "two blue squares")  # the server still serves
    _wait(browser, lambda d: "seed 0" in d.find_element(By.ID, "status").text)

    browser.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Caption')]").click()
    small = tmp_path / "small.png"
    save_png(np.zeros((16, 16, 3), np.uint8), small)
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))[0].send_keys(str(small))
    time.sleep(1)
    browser.find_element(By.ID, "caption").click()
    text = _wait(browser, lambda d: "this run takes uint8 images" in d.find_element(By.ID, "caption_status").text
                 and d.find_element(By.ID, "caption_status").text)
    assert "32, 32, 3" in text


def test_service_of_a_class_run_and_a_draft(tmp_path):
    """A class-conditional run: classes in (comma-separated), images out, a label out of range refused by the
    library; a draft run offers speculative decoding (here the run drafts for itself: greedy equals plain)."""
    from ar_jax.demo.service import DemoService
    from tests.helpers import smoke_config

    train_and_evaluate(smoke_config(), tmp_path / "digits")
    service = DemoService(tmp_path / "digits", max_batch=4, draft_workdir=tmp_path / "digits")
    assert service.kind == "class" and service.methods == ["plain", "speculative"] and not service.captions
    answer = service.generate("0, 3", 2, seed=1)
    assert answer.images.shape == (4, 8, 8, 1)
    plain = service.generate("0, 3", 2, seed=1, temperature=0.05, top_k=1)
    fast = service.generate("0, 3", 2, seed=1, temperature=0.05, top_k=1, method="speculative")
    np.testing.assert_array_equal(plain.images, fast.images)  # top-1: both decode the model's argmax
    with pytest.raises(ValueError, match="12"):
        service.generate("12", 1)
    with pytest.raises(ValueError, match="class 'x' is not a number"):
        service.generate("x", 1)
    with pytest.raises(ValueError, match="without image-to-text.*text_head=False"):
        service.caption(np.zeros((8, 8, 1), np.uint8))


def test_service_of_a_medusa_run(tmp_path):
    """A Medusa run's workdir: the page offers its heads (first) and plain decoding; greedy-like top-1 sampling gives
    the same images both ways."""
    from ar_jax.demo.service import DemoService
    from tests.helpers import smoke_config

    train_and_evaluate(smoke_config(), tmp_path / "base")
    config = load_config_file("configs/scenes_t2i_medusa.py:smoke")
    config.unlock()
    config.base_workdir = str(tmp_path / "base")
    config.lock()
    train_and_evaluate(config, tmp_path / "medusa")
    service = DemoService(tmp_path / "medusa", max_batch=4)
    assert service.methods == ["medusa", "plain"] and "Medusa heads" in service.about
    fast = service.generate("1, 2", 2, seed=0, temperature=0.05, top_k=1)
    plain = service.generate("1, 2", 2, seed=0, temperature=0.05, top_k=1, method="plain")
    assert "medusa decoding" in fast.status
    np.testing.assert_array_equal(fast.images, plain.images)
