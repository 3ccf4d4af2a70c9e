"""`ssgan studio`: edit a sample region by region in the browser.

`Studio` holds the state of one page (the latent being edited, a second "source" latent, the selected region, the
two blend fractions, the visible components) and every action is a plain method over ssgan.editing, so tests and
scripts can drive it without a browser. `build_app` wires those methods to Gradio widgets and nothing else; Gradio
is imported only there (the optional extra `pip install "ssgan[studio]"`).

Latents are W+ [1, 2+2K, D]. A region's edit moves its shape code a fraction `shape` and its texture code a
fraction `texture` of the way from the edited latent to the source (`editing.blend_regions`); every other W+ slot
stays bit-identical. "Keep edit" makes the blended latent the new one, so edits of several regions stack.
"""
import functools
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssgan import editing as E

DISPLAY_SIZE = 256  # small models are shown enlarged (by pixel repetition) to at least this many pixels
INSTALL_HINT = 'ssgan studio needs Gradio: pip install "ssgan[studio]"'


class InversionCancelled(Exception):
    """Raised out of `Studio.invert_photo` when `Studio.cancel` was called during the inversion."""


@dataclass
class View:
    """What the page shows after an action (arrays at the model's resolution S)."""

    image: np.ndarray  # [S, S, 3] uint8, the edited image
    seg: np.ndarray  # [S, S, 3] uint8, its colourised segmentation (argmax)
    labels: np.ndarray  # [S, S] int64, class per pixel
    depth: np.ndarray | None  # [S, S, 3] uint8, pseudo-depth of the selected region (inferno), when asked for
    render_seconds: float  # wall time of the generator call


class Studio:
    """The state of one studio page over a generator G (eval mode; its device is used for everything)."""

    def __init__(self, G, psi=0.7, seed=0, source_seed=1):
        self.G = G.eval().requires_grad_(False)
        self.cfg = G.cfg
        self.psi = psi
        self.w = None  # W+ [1, 2+2K, D], the latent being edited
        self.source = None  # W+ [1, 2+2K, D], where the selected region's codes are blended from
        self.seed = self.source_seed = None  # the seeds of w and source (None: a photo or a latent file)
        self.region = None  # class index, or None
        self.shape = 0.0  # blend fractions in [0, 1]
        self.texture = 0.0
        self.visible = set(range(self.cfg.num_classes))  # classes drawn (the composition mask)
        self.show_depth = False
        self._cancel = threading.Event()
        self._view = None
        self.sample(seed)
        self.sample_source(source_seed)

    @classmethod
    def from_checkpoint(cls, path, device=None, **kwargs):
        import ssgan

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(ssgan.load_checkpoint(path).g_ema.to(device), **kwargs)

    @property
    def device(self):
        return self.G.local.weight.device

    # --- latents ----------------------------------------------------------------------------------

    def _seed_latent(self, seed, psi):
        seed = secrets.randbelow(2**31) if seed is None else seed
        if seed != int(seed) or seed < 0:
            raise ValueError(f"a seed is a whole number >= 0, got {seed}")
        seed = int(seed)
        self.psi = self.psi if psi is None else float(psi)
        return seed, E.as_w_plus(self.cfg, E.w_from_seeds(self.G, [seed], self.psi)).clone()

    def _checked(self, w, what):
        w = torch.as_tensor(w, dtype=torch.float32, device=self.device)
        w = w[None] if w.ndim == 1 else w
        try:
            w = E.as_w_plus(self.cfg, w)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
        if w.shape[0] != 1:
            raise ValueError(f"{what}: the studio edits one latent at a time, got a batch of {w.shape[0]}")
        return w.clone()

    def sample(self, seed=None, psi=None):
        """Start over from the sample of `seed` (a random seed when None) at truncation psi; returns the seed."""
        self.seed, self.w = self._seed_latent(seed, psi)
        self._reset_blend()
        return self.seed

    def sample_source(self, seed=None, psi=None):
        """Take the source from the sample of `seed` (random when None); returns the seed."""
        self.source_seed, self.source = self._seed_latent(seed, psi)
        self._view = None
        return self.source_seed

    def set_latent(self, w, what="latent"):
        """Edit this latent: W [D] / [1, D] or W+ [1, 2+2K, D]."""
        self.w, self.seed = self._checked(w, what), None
        self._reset_blend()

    def set_source(self, w, what="source latent"):
        self.source, self.source_seed = self._checked(w, what), None
        self._view = None

    def load_latent(self, path, as_source=False):
        """Read a latent file (.npy / .safetensors, as written by `ssgan generate`, `invert` or `export`)."""
        w = E.load_latents(path)
        (self.set_source if as_source else self.set_latent)(w, str(path))

    def _reset_blend(self):
        self.shape = self.texture = 0.0
        self._view = None

    # --- editing ----------------------------------------------------------------------------------

    def select_region(self, region):
        """Select a region by class name or index (None: no region; the sliders then do nothing)."""
        self.region = None if region is None else self.cfg.class_index(region)
        self._view = None

    def region_at(self, x, y):
        """Class of pixel (x, y) (column, row, in model pixels) in the current segmentation."""
        S = self.cfg.size
        if not (0 <= x < S and 0 <= y < S):
            raise ValueError(f"pixel ({x}, {y}) lies outside the {S}x{S} image")
        return int(self.render().labels[int(y), int(x)])

    def select_at(self, x, y):
        """Select the region under pixel (x, y); returns its class index."""
        self.select_region(self.region_at(x, y))
        return self.region

    def set_blend(self, shape=None, texture=None):
        """Blend fractions (0: the edited latent's code, 1: the source's) of the selected region's shape and texture."""
        for name, value in (("shape", shape), ("texture", texture)):
            if value is not None:
                if not 0 <= value <= 1:
                    raise ValueError(f"{name} blend must lie in [0, 1], got {value}")
                setattr(self, name, float(value))
        self._view = None

    def set_visible(self, classes):
        """Draw only these classes (names or indices): the composition mask."""
        visible = {self.cfg.class_index(c) for c in classes}
        if not visible:
            raise ValueError("keep at least one region visible")
        self.visible = visible
        self._view = None

    def set_show_depth(self, show):
        self.show_depth = bool(show)
        self._view = None

    def edited_latent(self):
        """W+ [1, 2+2K, D]: the latent with the selected region's codes blended towards the source."""
        if self.region is None:
            return self.w
        name = self.cfg.class_names[self.region]
        w = E.blend_regions(self.cfg, self.w, self.source, f"{name}:shape", self.shape)
        return E.blend_regions(self.cfg, w, self.source, f"{name}:texture", self.texture)

    def keep_edit(self):
        """Make the blended latent the one being edited (sliders back to 0), so that another region can follow."""
        self.w = self.edited_latent().clone()
        self._reset_blend()

    def composition_mask(self):
        """[1, K] float, or None when every class is drawn (the generator's plain path)."""
        if len(self.visible) == self.cfg.num_classes:
            return None
        mask = torch.zeros(1, self.cfg.num_classes, device=self.device)
        mask[0, sorted(self.visible)] = 1
        return mask

    @torch.no_grad()
    def render(self):
        """The View of the current state (cached until the state changes)."""
        if self._view is None:
            start = time.perf_counter()
            out = self.G(w=self.edited_latent(), composition_mask=self.composition_mask())
            seconds = time.perf_counter() - start
            depth = None
            if self.show_depth and self.region is not None:
                coarse = E.colorize_depth(out.depths[:, self.region])  # [1, G, G, 3]
                depth = E.resize_nearest(coarse, self.cfg.size)[0]
            labels = E.seg_labels(out.seg)[0]
            self._view = View(E.to_uint8(out.image)[0], E.colorize_labels(labels), labels, depth, seconds)
        return self._view

    # --- photos -----------------------------------------------------------------------------------

    def invert_photo(self, path, steps=200, as_source=False, callback=None, lr=0.1):
        """Invert an aligned face photo into W+ (`ssgan.invert`, pixel loss) and edit it, or use it as the source.

        callback(step, steps, loss) after each step. `cancel()` from another thread stops the inversion with
        InversionCancelled and leaves the state as it was. Returns the final loss."""
        from ssgan.inversion import invert, load_image

        if steps < 1:
            raise ValueError(f"the inversion needs at least 1 step, got {steps}")
        image = load_image(path, self.cfg.size)[None].to(self.device)
        self._cancel.clear()

        def step_done(step, loss):
            if self._cancel.is_set():
                raise InversionCancelled(f"inversion of {Path(path).name} cancelled after {step + 1} of {steps} steps")
            if callback is not None:
                callback(step, steps, loss)

        result = invert(self.G, image, steps=steps, lr=lr, callback=step_done)
        (self.set_source if as_source else self.set_latent)(result.w_plus, str(path))
        return result.losses[-1]

    def cancel(self):
        self._cancel.set()

    # --- files ------------------------------------------------------------------------------------

    def export(self, folder):
        """Write image.png, segmentation.png (colours), labels.png (class indices) and latent.npy (W+ [1, 2+2K, D],
        read back by `--latent` of the command-line tools) into `folder`; returns their paths."""
        from ssgan.inversion import save_labels

        folder = Path(folder)
        view = self.render()
        paths = [folder / name for name in ("image.png", "segmentation.png", "labels.png", "latent.npy")]
        E.save_png(view.image, paths[0])
        E.save_png(view.seg, paths[1])
        save_labels(view.labels, paths[2])
        E.save_latents(paths[3], self.edited_latent())
        return paths


# --- the Gradio page ------------------------------------------------------------------------------


def display_scale(size):
    """Integer enlargement for showing a size x size image at DISPLAY_SIZE or more."""
    return max(1, DISPLAY_SIZE // size)


def _enlarge(rgb, size):
    return E.resize_nearest(rgb[None], size * display_scale(size))[0]


CSS = """
#studio-title h1 {margin-bottom: 0;}
.pixelated img {image-rendering: pixelated;}
#region .wrap {gap: 6px;}
#region label span::before {content: ""; display: inline-block; width: 13px; height: 13px; margin-right: 6px;
  border-radius: 50%; border: 1px solid #8888; vertical-align: -2px; background: var(--swatch);}
footer {display: none !important;}
"""


def page_css(cfg):
    """The page's style: each class's colour in the segmentation becomes its swatch in the legend."""
    swatches = "\n".join(
        f'#region input[value="{name}"] + span {{--swatch: rgb({r}, {g}, {b});}}'
        for name, (r, g, b) in zip(cfg.class_names, E.PALETTE)
    )
    return CSS + swatches + "\n"


def build_app(studio: Studio, workdir=None):
    """The Gradio Blocks page over one model. Each browser tab gets its own Studio (sharing G)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no telemetry, no version check
    import gradio as gr

    G, cfg, S = studio.G, studio.cfg, studio.cfg.size
    names = list(cfg.class_names)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="ssgan-studio-"))

    first = dict(psi=studio.psi, seed=studio.seed, source_seed=studio.source_seed)

    def new_studio():  # every tab starts where `studio` was created
        return Studio(G, **first)

    def errors(fn):
        """Bad input (seed, file, latent) becomes a message on the page instead of a stack trace."""

        @functools.wraps(fn)  # keeps the signature: Gradio injects gr.SelectData and gr.Progress by it
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (ValueError, KeyError, FileNotFoundError) as e:
                raise gr.Error(str(e.args[0] if isinstance(e, KeyError) and e.args else e)) from None

        return wrapped

    def show(st, note=None):
        """Outputs of every render: state, image, seg, depth, region, status (led by `note`, if any), and the
        downloads, hidden until asked for again so that they never lag behind the page."""
        view = st.render()
        depth = None if view.depth is None else _enlarge(view.depth, S)
        region = None if st.region is None else names[st.region]
        status = (f"{'region **' + region + '**' if region else 'no region selected'} · "
                  f"shape {st.shape:.2f}, texture {st.texture:.2f} · rendered in {1000 * view.render_seconds:.0f} ms")
        status = status if note is None else f"{note} · {status}"
        return (st, _enlarge(view.image, S), _enlarge(view.seg, S), gr.update(value=depth, visible=st.show_depth),
                region, status, gr.update(value=None, visible=False))

    def source_preview(st):
        with torch.no_grad():
            out = G(w=st.source)
        return _enlarge(E.to_uint8(out.image)[0], S)

    with gr.Blocks(title="ssgan studio", analytics_enabled=False) as app:
        state = gr.State()
        gr.Markdown(
            "# ssgan studio\nPick a region (click a pixel of the image or the segmentation, or a class in the "
            "legend), then blend its **shape** and **texture** towards the source; every other region stays put.",
            elem_id="studio-title",
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=270):
                with gr.Group():
                    seed = gr.Number(studio.seed, label="Seed", precision=0, minimum=0, elem_id="seed")
                    with gr.Row():
                        sample_btn = gr.Button("Sample", variant="primary", size="sm", min_width=80)
                        random_btn = gr.Button("Random seed", size="sm", min_width=80)
                    psi = gr.Slider(0, 1.5, studio.psi, step=0.05, label="Truncation ψ")
                with gr.Group():
                    source_seed = gr.Number(studio.source_seed, label="Source seed", precision=0, minimum=0,
                                            elem_id="source-seed")
                    with gr.Row():
                        source_btn = gr.Button("Use as source", size="sm", min_width=80)
                        source_random = gr.Button("Random seed", size="sm", min_width=80)
                source_img = gr.Image(label="Source", format="png", interactive=False, height=160,
                                      elem_id="source", elem_classes="pixelated", buttons=[])
                with gr.Accordion("Your photo", open=False):
                    photo = gr.Image(label="Aligned face photo", type="filepath", sources=["upload"], height=160,
                                     elem_id="photo")
                    steps = gr.Slider(10, 1000, 200, step=10, label="Inversion steps")
                    use_as = gr.Radio(["edit it", "as source"], value="edit it", label="Use the photo")
                    with gr.Row():
                        invert_btn = gr.Button("Invert", variant="primary", size="sm", min_width=80)
                        cancel_btn = gr.Button("Cancel", variant="stop", size="sm", min_width=80)
                with gr.Accordion("Open a latent", open=False):
                    latent_file = gr.File(label=".npy / .safetensors (W or W+)", file_types=[".npy", ".safetensors"],
                                          elem_id="latent-file")
                    latent_as = gr.Radio(["edit it", "as source"], value="edit it", label="Use the latent")
            with gr.Column(scale=3):
                with gr.Row():
                    image = gr.Image(label="Image", format="png", interactive=False, elem_id="image",
                                     elem_classes="pixelated", buttons=["download"])
                    seg = gr.Image(label="Segmentation", format="png", interactive=False, elem_id="seg",
                                   elem_classes="pixelated", buttons=["download"])
                    depth = gr.Image(label="Pseudo-depth of the region", format="png", interactive=False,
                                     elem_id="depth", elem_classes="pixelated", visible=False, buttons=[])
                region = gr.Radio(names, label="Legend · the selected region", elem_id="region")
                status = gr.Markdown(elem_id="status")
                export_btn = gr.Button("Prepare downloads", size="sm")
                files = gr.File(label="Image, segmentation, labels, latent (W+ .npy)", file_count="multiple",
                                interactive=False, elem_id="downloads", visible=False)
            with gr.Column(scale=1, min_width=260):
                shape = gr.Slider(0, 1, 0, step=0.01, label="Shape", info="0 = this sample, 1 = the source",
                                  elem_id="shape")
                texture = gr.Slider(0, 1, 0, step=0.01, label="Texture", info="0 = this sample, 1 = the source",
                                    elem_id="texture")
                with gr.Row():
                    keep_btn = gr.Button("Keep edit", size="sm", min_width=80)
                    reset_btn = gr.Button("Reset", size="sm", min_width=80)
                show_depth = gr.Checkbox(False, label="Show the region's pseudo-depth")
                components = gr.CheckboxGroup(names, value=names, label="Components drawn", elem_id="components")

        view = [state, image, seg, depth, region, status, files]

        def start():
            st = new_studio()
            return (*show(st), source_preview(st))

        app.load(start, None, [*view, source_img])

        def on_sample(st, seed_value, psi_value):
            st.sample(seed_value, psi_value)
            return (*show(st), 0, 0)

        def on_random(st, psi_value):
            used = st.sample(None, psi_value)
            return (*show(st), 0, 0, used)

        sample_btn.click(errors(on_sample), [state, seed, psi], [*view, shape, texture])
        seed.submit(errors(on_sample), [state, seed, psi], [*view, shape, texture])
        psi.release(errors(on_sample), [state, seed, psi], [*view, shape, texture])
        random_btn.click(errors(on_random), [state, psi], [*view, shape, texture, seed])

        def on_source(st, seed_value):
            used = st.sample_source(seed_value)
            return (*show(st), source_preview(st), used)

        source_btn.click(errors(on_source), [state, source_seed], [*view, source_img, source_seed])
        source_seed.submit(errors(on_source), [state, source_seed], [*view, source_img, source_seed])
        source_random.click(errors(lambda st: on_source(st, None)), [state], [*view, source_img, source_seed])

        def on_pick(st, evt: gr.SelectData):
            x, y = (int(v) // display_scale(S) for v in evt.index)
            st.select_at(x, y)
            return show(st)

        for panel in (image, seg, depth):
            panel.select(errors(on_pick), [state], view, show_progress="hidden")

        def on_region(st, name):
            st.select_region(name)
            return show(st)

        region.input(errors(on_region), [state, region], view, show_progress="hidden")

        def on_blend(st, shape_value, texture_value):
            st.set_blend(shape_value, texture_value)
            return show(st)

        for slider in (shape, texture):
            slider.input(errors(on_blend), [state, shape, texture], view, trigger_mode="always_last",
                          show_progress="hidden")

        def on_keep(st):
            st.keep_edit()
            return (*show(st), 0, 0)

        def on_reset(st):
            st.set_blend(0, 0)
            return (*show(st), 0, 0)

        keep_btn.click(errors(on_keep), [state], [*view, shape, texture])
        reset_btn.click(errors(on_reset), [state], [*view, shape, texture])

        def on_depth(st, value):
            st.set_show_depth(value)
            return show(st)

        show_depth.input(errors(on_depth), [state, show_depth], view, show_progress="hidden")

        def on_components(st, value):
            st.set_visible(value)
            return show(st)

        components.input(errors(on_components), [state, components], view, show_progress="hidden")

        def on_invert(st, path, n_steps, target, progress=gr.Progress()):
            if not path:
                raise ValueError("upload a photo first")
            as_source = target == "as source"

            def report(step, total, loss):
                progress((step + 1, total), desc=f"inverting: loss {loss:.4f}")

            try:
                loss = st.invert_photo(path, int(n_steps), as_source, report)
                note = f"inverted {Path(path).name} ({int(n_steps)} steps): loss {loss:.4f}"
            except InversionCancelled as e:
                note = str(e)
            gr.Info(note)
            return (*show(st, note), source_preview(st), 0, 0)

        invert_btn.click(errors(on_invert), [state, photo, steps, use_as], [*view, source_img, shape, texture],
                         show_progress_on=[photo])  # fmt: skip
        cancel_btn.click(lambda st: st.cancel(), [state], None, queue=False)

        def on_latent(st, path, target):
            if path:
                st.load_latent(path, as_source=target == "as source")
            return (*show(st), source_preview(st), 0, 0)

        latent_file.upload(errors(on_latent), [state, latent_file, latent_as], [*view, source_img, shape, texture])

        def on_export(st):
            return gr.update(value=[str(p) for p in st.export(Path(tempfile.mkdtemp(dir=workdir)))], visible=True)

        export_btn.click(errors(on_export), [state], files)
    app.workdir = workdir
    return app


def launch(studio: Studio, host="127.0.0.1", port=None, block=True):
    """Serve the page on host:port (a free port from 7860 on when None), locally only: no share link, no
    analytics, no server-side rendering. Returns (app, url)."""
    import gradio as gr

    app = build_app(studio)
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                           font_mono=["ui-monospace", "monospace"])  # system fonts: nothing fetched
    _, url, _ = app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=True, quiet=True,
                           ssr_mode=False, theme=theme, css=page_css(studio.cfg), footer_links=[],
                           allowed_paths=[str(app.workdir)], mcp_server=False, pwa=False)  # fmt: skip
    if block:
        print(f"ssgan studio: open {url} (Ctrl+C to stop)", flush=True)
        try:
            app.block_thread()
        finally:
            app.close()
    return app, url
