"""The demo page (Gradio): a prompt box or a class picker and the sampling settings in, images out; for a run
trained both ways, an image in and captions with their log-probabilities out. All work is `DemoService`'s; a
refused request shows the library's message in the page's status line and the server keeps serving."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ar_jax.demo.service import DemoService


def _status(error: Exception) -> str:
    return f"**Error:** {error}"


def build(service: DemoService) -> gr.Blocks:
    """The page of `service`'s run (`gr.Blocks`, not launched)."""
    d = service.defaults()
    with gr.Blocks(title=f"ar_jax: {service.workdir.name}", analytics_enabled=False) as page:
        gr.Markdown(f"# ar_jax demo\n{service.about}", elem_id="about")
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column():
                    if service.kind == "text":
                        request = gr.Textbox(lines=4, label="Prompts, one per line", elem_id="prompts",
                                             value="\n".join(service.pipe.config.text.get("sample_prompts", ())[:2]))
                    else:
                        request = gr.Dropdown([str(c) for c in range(service.num_classes)], value=["0"],
                                              multiselect=True, label="Classes", elem_id="classes")
                    per = gr.Slider(1, service.max_batch, value=min(4, service.max_batch), step=1,
                                    label="Images per prompt" if service.kind == "text" else "Images per class")
                    seed = gr.Number(0, precision=0, label="Seed")
                    method = gr.Radio(service.methods, value=service.methods[0], label="Decoding")
                    cfg = gr.Slider(1.0, 8.0, value=d["cfg_scale"], step=0.25, label="CFG scale")
                    temperature = gr.Slider(0.05, 2.0, value=d["temperature"], step=0.05, label="Temperature")
                    top_k = gr.Slider(0, service.pipe.model_config.vocab_size, value=d["top_k"], step=1,
                                      label="Top-k (0: all)")
                    top_p = gr.Slider(0.05, 1.0, value=d["top_p"], step=0.05, label="Top-p")
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column():
                    gallery = gr.Gallery(label="Samples", columns=4, format="png", elem_id="samples")
                    status = gr.Markdown(elem_id="status")

            def on_generate(request: Any, per: float, seed: float, method: str, cfg: float, temperature: float,
                            top_k: float, top_p: float,
                            progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008 (how Gradio finds it)
                progress(0.0, desc="sampling")
                try:
                    text = "\n".join(request) if isinstance(request, list) else str(request or "")
                    answer = service.generate(text, int(per), seed=int(seed or 0), method=method, cfg_scale=cfg,
                                              temperature=temperature, top_k=int(top_k), top_p=top_p)
                except ValueError as e:
                    return [], _status(e)
                return list(answer.images), answer.status

            run.click(on_generate, [request, per, seed, method, cfg, temperature, top_k, top_p], [gallery, status],
                      concurrency_limit=1)
        if service.captions:
            with gr.Tab("Caption"):
                with gr.Row():
                    with gr.Column():
                        image = gr.Image(type="numpy", image_mode=None, label="Image", elem_id="upload")
                        samples = gr.Slider(1, service.max_batch, value=3, step=1, label="Captions")
                        go = gr.Button("Caption", variant="primary", elem_id="caption")
                    with gr.Column():
                        table = gr.Dataframe(headers=["caption", "log p (nats)"], elem_id="captions")
                        cap_status = gr.Markdown(elem_id="caption_status")

                def on_caption(image: Any, samples: float) -> tuple:
                    try:
                        answer = service.caption(image, int(samples))
                    except ValueError as e:
                        return [], _status(e)
                    return [[t, round(lp, 3)] for t, lp in answer.captions], answer.status

                go.click(on_caption, [image, samples], [table, cap_status], concurrency_limit=1)
    return page
