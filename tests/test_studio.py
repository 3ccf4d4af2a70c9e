"""`ssgan studio`: the Studio actions as plain functions, the command without Gradio, and the page in a real browser
(headless Chromium driven by Playwright): click a region, move a slider, the image changes there and nowhere else."""
import importlib.util
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import ssgan
from ssgan import editing as E
from ssgan.cli import main
from ssgan.studio import InversionCancelled, Studio, display_scale

from conftest import ROOT, shared_path

ARTIFACTS = ROOT / "tests" / "artifacts" / "studio"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def local_demo_generator():
    """The demo preset with random weights made local, as training makes a real model: random weights give soft
    masks and a render net that mixes every region into every pixel, so no edit of them could be local. Here the
    depths are sharpened (near one-hot masks), the segmentation is the coarse mask's, and the image is drawn from
    the fused features at full resolution only (a few pixels of receptive field)."""
    torch.manual_seed(0)
    g = ssgan.Generator(ssgan.preset("demo"))
    with torch.no_grad():
        g.local.depth_scale.mul_(300)
        render = g.render
        for head in [*render.to_segs, *render.to_rgbs[:-1]]:
            head.weight.zero_()
            head.bias.zero_()
        low_res_channels = g.cfg.render_channels[g.cfg.coarse_size]
        render.convs[-2].weight[:, :low_res_channels] = 0  # the last block sees the full-resolution features only
    return g.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def G():
    return local_demo_generator()


@pytest.fixture(scope="module")
def ckpt(G, tmp_path_factory):
    path = tmp_path_factory.mktemp("studio") / "local-demo.safetensors"
    ssgan.save_checkpoint(path, G.cfg, g_ema=G)
    return path


def interior_pixel(labels, k):
    """(x, y) of the pixel of class k farthest from its border (repeated erosion)."""
    inside = torch.from_numpy(labels == k).float()[None, None]
    while True:
        eroded = -F.max_pool2d(-inside, 3, 1, 1)
        if eroded.sum() == 0:
            break
        inside = eroded
    y, x = np.argwhere(inside[0, 0].numpy() > 0)[0]
    return int(x), int(y)


def dilate(mask, pixels):
    m = torch.from_numpy(mask).float()[None, None]
    return F.max_pool2d(m, 2 * pixels + 1, 1, pixels)[0, 0].numpy() > 0


def needs(modules=("gradio",), chromium=False):
    """Skip without Gradio (or Playwright and Debian's Chromium); CI installs them all, so there it fails instead."""
    missing = [f'{m} (pip install -e ".[studio]" playwright)' for m in modules if importlib.util.find_spec(m) is None]
    if chromium and not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        message = f"this test needs {', '.join(missing)}"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)


# --- the actions, without a browser ---------------------------------------------------------------


def test_blend_regions_ends_and_other_slots():
    cfg = ssgan.preset("demo")
    target, source = torch.randn(2, cfg.n_latent, cfg.style_dim), torch.randn(1, cfg.n_latent, cfg.style_dim)
    chosen = E.slot_mask(cfg, "hair:texture")
    assert torch.equal(E.blend_regions(cfg, target, source, "hair:texture", 0), target)
    assert torch.equal(E.blend_regions(cfg, target, source, "hair:texture", 1),
                       E.swap_regions(cfg, target, source, "hair:texture"))  # fmt: skip
    half = E.blend_regions(cfg, target, source, "hair:texture", 0.5)
    assert torch.equal(half[:, ~chosen], target[:, ~chosen])
    torch.testing.assert_close(half[:, chosen], (target[:, chosen] + source[:, chosen]) / 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        E.blend_regions(cfg, target, source, "hair", 1.5)


def test_sample_select_blend_keep(G):
    st = Studio(G, psi=0.7, seed=5, source_seed=6)
    cfg = G.cfg
    torch.testing.assert_close(st.w[0, 0], E.w_from_seeds(G, [5], 0.7)[0], rtol=0, atol=0)
    assert (st.seed, st.source_seed) == (5, 6)
    assert st.sample(None) == st.seed >= 0  # a random seed, reported back
    assert st.sample(5) == 5
    view = st.render()
    assert view.image.shape == (cfg.size, cfg.size, 3) and view.image.dtype == np.uint8
    assert view.labels.shape == (cfg.size, cfg.size) and view.depth is None
    x, y = interior_pixel(view.labels, cfg.class_index("mouth"))
    assert st.select_at(x, y) == cfg.class_index("mouth") == st.region
    assert torch.equal(st.edited_latent(), st.w)  # sliders at 0: nothing moves
    st.set_blend(texture=1)  # a texture edit keeps the masks, so the image changes inside the region only
    changed = np.abs(st.render().image.astype(int) - view.image).mean(-1)
    inside = dilate(view.labels == cfg.class_index("mouth"), 4)
    assert changed[inside].mean() > 5 and changed[~inside].mean() < 0.1
    st.set_blend(shape=0.3)
    edited = st.edited_latent()
    shape_slot, texture_slot = E.region_slots(cfg, "mouth")
    others = ~E.slot_mask(cfg, "mouth")
    assert torch.equal(edited[:, others], st.w[:, others])
    assert torch.equal(edited[:, texture_slot], st.source[:, texture_slot])
    torch.testing.assert_close(edited[:, shape_slot], torch.lerp(st.w[:, shape_slot], st.source[:, shape_slot], 0.3))
    # Keep the mouth, then edit the hair: both edits stay.
    st.keep_edit()
    assert (st.shape, st.texture) == (0, 0) and torch.equal(st.w, edited)
    st.select_region("hair")
    st.set_blend(texture=1)
    both = st.edited_latent()
    assert torch.equal(both[:, texture_slot], st.source[:, texture_slot])
    assert torch.equal(both[:, E.region_slots(cfg, "hair:texture")], st.source[:, E.region_slots(cfg, "hair:texture")])


def test_components_depth_and_bad_input(G):
    st = Studio(G)
    cfg = G.cfg
    assert st.composition_mask() is None
    st.set_visible(["background", "face", "hair"])
    assert st.composition_mask().tolist() == [[1, 1, 0, 0, 0, 1, 0]]
    assert set(np.unique(st.render().labels)) <= {0, 1, 5}
    st.set_visible(cfg.class_names)
    st.select_region("eyes")
    st.set_show_depth(True)
    depth = st.render().depth
    assert depth.shape == (cfg.size, cfg.size, 3) and depth.dtype == np.uint8
    with pytest.raises(ValueError, match="at least one"):
        st.set_visible([])
    with pytest.raises(KeyError, match="background, face"):
        st.select_region("nose")
    with pytest.raises(ValueError, match=r"outside the 64x64"):
        st.region_at(64, 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        st.set_blend(texture=2)
    for seed in (-1, 2.5):
        with pytest.raises(ValueError, match=">= 0"):
            st.sample(seed)
    with pytest.raises(ValueError, match=r"bad\.npy.*W \[B, 64\]"):
        st.set_latent(torch.zeros(1, 5, 64), "bad.npy")
    with pytest.raises(ValueError, match="one latent at a time"):
        st.set_latent(torch.zeros(2, 64))


def test_original_checkpoint():
    st = Studio.from_checkpoint(shared_path("fixtures", "official_small", "checkpoint.pt"), device="cpu")
    view = st.render()
    assert view.image.shape == (128, 128, 3)
    assert st.select_at(5, 5) == view.labels[5, 5]


def test_edit_renders_under_half_a_second(G):
    st = Studio(G)
    st.select_region("hair")
    times = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on one core: intra-op threads that wait for each other on a busy machine mislead
    try:
        for t in np.linspace(0, 1, 7):
            start = time.perf_counter()
            st.set_blend(texture=float(t))
            st.render()
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    print(f"studio edit on the demo model (one CPU core): median {1000 * statistics.median(times):.0f} ms, "
          f"best {1000 * min(times):.0f} ms")
    assert min(times) < 0.5  # the best of 7: what an edit costs, whatever else shares the CPU


def test_export_is_read_back_by_the_cli(G, ckpt, tmp_path, capsys):
    st = Studio(G, seed=3)
    st.select_region("hair")
    st.set_blend(texture=1)
    image, seg, labels, latent = st.export(tmp_path / "export")
    assert np.array_equal(np.asarray(Image.open(image)), st.render().image)
    assert np.array_equal(np.asarray(Image.open(labels)), st.render().labels)
    assert np.asarray(Image.open(seg)).shape == (64, 64, 3)
    w = np.load(latent)
    assert w.shape == (1, G.cfg.n_latent, G.cfg.style_dim)  # with its batch dimension
    assert torch.equal(torch.from_numpy(w), st.edited_latent())
    out = tmp_path / "edit"
    assert main(["edit", "--ckpt", str(ckpt), "--latent", str(latent), "--regions", "mouth", "--source-seeds", "1",
                 "--out", str(out)]) == 0  # fmt: skip
    assert (out / "edit_000.png").is_file()
    fresh = Studio(G)
    fresh.load_latent(latent)
    assert torch.equal(fresh.w, st.edited_latent()) and fresh.seed is None


def test_invert_photo_progress_and_cancel(G, tmp_path):
    st = Studio(G)
    steps_seen = []
    loss = st.invert_photo(shared_path("data", "faces", "0.png"), steps=2, as_source=True,
                           callback=lambda step, total, value: steps_seen.append((step, total)))  # fmt: skip
    assert steps_seen == [(0, 2), (1, 2)] and np.isfinite(loss)
    assert not torch.equal(st.source, E.as_w_plus(G.cfg, E.w_from_seeds(G, [1], 0.7)))
    before = st.w.clone()

    def cancel_after_first_step(step, total, value):
        st.cancel()  # as the page's Cancel button does, from another thread

    with pytest.raises(InversionCancelled, match="cancelled after 2 of 50 steps"):
        st.invert_photo(shared_path("data", "faces", "1.png"), steps=50, callback=cancel_after_first_step)
    assert torch.equal(st.w, before)  # a cancelled inversion changes nothing
    with pytest.raises(FileNotFoundError, match="no image file"):
        st.invert_photo("missing.png")
    Image.new("RGB", (64, 48)).save(wide := Path(tmp_path) / "wide.png")
    with pytest.raises(ValueError, match="64x48; inversion needs square"):
        st.invert_photo(wide)


def test_command_refuses_a_missing_checkpoint(capsys):
    needs()
    assert main(["studio", "--ckpt", "missing.safetensors"]) == 2
    assert "no checkpoint at missing.safetensors" in capsys.readouterr().err


def test_import_and_command_without_gradio(ckpt, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # importing gradio now fails as if it were not installed
    assert main(["studio", "--ckpt", str(ckpt)]) == 2
    assert 'pip install "ssgan[studio]"' in capsys.readouterr().err
    code = "import sys; sys.modules['gradio'] = None; import ssgan, ssgan.studio, ssgan.cli; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"


# --- the page in a browser ------------------------------------------------------------------------

# The studio runs as `ssgan studio` in a child process whose sockets may reach only this machine.
SERVE = """
import ipaddress, socket, sys
connect = socket.socket.connect
def local_only(self, address):
    host = address[0] if isinstance(address, tuple) else None
    if host is not None and host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        print(f"BLOCKED connection to {address}", file=sys.stderr, flush=True)
        raise OSError(f"studio test: no network ({address})")
    return connect(self, address)
socket.socket.connect = local_only
from ssgan.cli import main
sys.exit(main(sys.argv[1:]))
"""




def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_image(page, selector):
    """The RGB array of the image an <img> shows, as the server sent it, and its source URL."""
    src = page.locator(f"{selector} img").get_attribute("src")
    with urllib.request.urlopen(src if src.startswith("http") else page.url.rstrip("/") + src, timeout=10) as r:
        return np.asarray(Image.open(BytesIO(r.read())).convert("RGB")), src


def wait_for_new_image(page, selector, old_src, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        src = page.locator(f"{selector} img").get_attribute("src")
        if src and src != old_src:
            return
        page.wait_for_timeout(25)
    raise AssertionError(f"{selector} did not change within {timeout} s")


def test_browser_click_region_move_slider(G, ckpt):
    needs(("gradio", "playwright"), chromium=True)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-c", SERVE, "studio", "--ckpt", str(ckpt), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    try:
        url = None
        for line in server.stdout:
            if m := re.search(r"open (http://\S+)", line):
                url = m.group(1)
                break
        assert url == f"http://127.0.0.1:{port}/", f"no address printed (exit {server.poll()})"
        cfg, S = G.cfg, G.cfg.size
        scale = display_scale(S)
        expected = Studio(G).render()  # the page's first sample: seed 0
        mouth = cfg.class_index("mouth")
        x, y = interior_pixel(expected.labels, mouth)
        outside_requests = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})

            def route(request_route):
                if request_route.request.url.startswith(url):
                    return request_route.continue_()
                outside_requests.append(request_route.request.url)
                return request_route.abort()

            page.route("**/*", route)
            page.goto(url)
            page.wait_for_selector("#image img", timeout=60_000)
            before, src = served_image(page, "#image")
            assert np.array_equal(before[::scale, ::scale], expected.image)
            page.screenshot(path=ARTIFACTS / "1-loaded.png", full_page=True)

            # Click the mouth in the segmentation: the legend and the status line follow.
            box = page.locator("#seg img").bounding_box()
            page.mouse.click(box["x"] + (x + 0.5) / S * box["width"], box["y"] + (y + 0.5) / S * box["height"])
            page.wait_for_selector("#region input[value=mouth]:checked", timeout=20_000)
            assert page.locator("#status").inner_text().startswith("region mouth")

            # Drag the texture slider to the end, as a person would.
            track = page.locator("#texture input[type=range]").bounding_box()
            mid = track["y"] + track["height"] / 2
            page.mouse.move(track["x"] + 2, mid)
            page.mouse.down()
            start = time.perf_counter()
            page.mouse.move(track["x"] + track["width"] + 10, mid, steps=5)
            page.mouse.up()
            wait_for_new_image(page, "#image", src)
            page.wait_for_function("document.querySelector('#status').innerText.includes('texture 1.00')",
                                   timeout=20_000)  # fmt: skip
            latency = time.perf_counter() - start
            after, _ = served_image(page, "#image")
            page.screenshot(path=ARTIFACTS / "2-mouth-texture.png", full_page=True)

            change = np.abs(after[::scale, ::scale].astype(int) - before[::scale, ::scale]).mean(-1)
            region = dilate(expected.labels == mouth, 4)  # the render net's few pixels of reach
            share = change[region].sum() / change.sum()
            print(f"browser: slider to image in {latency:.2f} s; mean |change| inside {change[region].mean():.1f}, "
                  f"outside {change[~region].mean():.3f} (0-255); {100 * share:.2f}% of the change inside")
            assert change[region].mean() > 5, "the mouth did not change"
            assert share > 0.99 and change[~region].mean() < 0.1, "the edit leaked out of the mouth"

            # Downloads: the latent comes back with its batch dimension.
            page.get_by_role("button", name="Prepare downloads").click()
            page.wait_for_selector("#downloads a[href*='latent.npy']", timeout=20_000)
            href = page.locator("#downloads a[href*='latent.npy']").get_attribute("href")
            with urllib.request.urlopen(href if href.startswith("http") else url.rstrip("/") + href) as r:
                latent = np.load(BytesIO(r.read()))
            assert latent.shape == (1, cfg.n_latent, cfg.style_dim)
            page.screenshot(path=ARTIFACTS / "3-downloads.png", full_page=True)

            # The region's pseudo-depth appears on request.
            page.get_by_label("Show the region's pseudo-depth").check()
            page.wait_for_selector("#depth img", timeout=20_000)

            # Dropping a component: the hair is drawn no more.
            _, src = served_image(page, "#image")
            page.locator("#components").get_by_label("hair").uncheck()
            wait_for_new_image(page, "#image", src)
            labels_shown = served_image(page, "#seg")[0][::scale, ::scale]
            assert not (labels_shown == E.PALETTE[cfg.class_index("hair")]).all(-1).any()

            # Open a latent written by the command-line tools: the page shows its sample.
            E.save_latents(latent_path := ckpt.parent / "seed7.npy", E.w_from_seeds(G, [7], 0.7))
            _, src = served_image(page, "#image")
            page.get_by_text("Open a latent").click()
            page.locator("#latent-file input[type=file]").set_input_files(str(latent_path))
            wait_for_new_image(page, "#image", src)
            shown, _ = served_image(page, "#image")
            expected = Studio(G, seed=7)
            expected.set_visible([c for c in cfg.class_names if c != "hair"])  # the components stay as they were
            assert np.array_equal(shown[::scale, ::scale], expected.render().image)

            # A photo's inversion shows its progress and can be cancelled.
            page.get_by_text("Your photo").click()
            page.locator("#photo input[type=file]").set_input_files(str(shared_path("data", "faces", "0.png")))
            page.get_by_role("button", name="Invert").click()
            page.get_by_text("inverting: loss").first.wait_for(timeout=30_000)
            page.screenshot(path=ARTIFACTS / "4-inverting.png", full_page=True)
            page.get_by_role("button", name="Cancel").click()
            page.wait_for_function("document.querySelector('#status').innerText.includes('cancelled after')",
                                   timeout=60_000)  # fmt: skip
            page.screenshot(path=ARTIFACTS / "5-cancelled.png", full_page=True)
            browser.close()
        assert not outside_requests, f"the page asked for outside resources: {outside_requests}"
    finally:
        server.terminate()
        log, _ = server.communicate(timeout=30)
        (ARTIFACTS / "server.log").write_text(log)
    assert "BLOCKED" not in log, f"the server tried to reach the network:\n{log}"


# --- the command's options ------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["99999", "0", "-5", "http"])
def test_port_out_of_range_is_an_argument_error(port, capsys):
    with pytest.raises(SystemExit) as e:
        main(["studio", "--ckpt", "x.safetensors", "--port", port])
    assert e.value.code == 2 and "--port" in capsys.readouterr().err


def test_busy_port_is_a_clear_error(ckpt, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["studio", "--ckpt", str(ckpt), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} is in use on 127.0.0.1: pass --port another" in err and "GRADIO" not in err


def test_studio_ckpt_help_names_every_model_form(capsys):
    from ssgan.model_cli import MODEL_HELP

    with pytest.raises(SystemExit):
        main(["studio", "--help"])
    assert "run directory" in " ".join(capsys.readouterr().out.split()) and "run directory" in MODEL_HELP
