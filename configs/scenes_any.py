"""Both directions in one transformer (early fusion, as Chameleon): text-to-image and image-to-text on the scenes.

    python train.py --config configs/scenes_vq.py --workdir runs/scenes_vq
    python train.py --config configs/scenes_any.py --workdir runs/scenes_any --config.tokenizer.workdir=runs/scenes_vq
    python sample.py --workdir runs/scenes_any --prompt "a red circle above a blue square" --out grid.png
    python sample.py --workdir runs/scenes_any --caption image.png [more.png ...]
    python benchmarks/caption_eval.py --workdir runs/scenes_any --t2i_workdir runs/scenes_t2i

configs/scenes_t2i.py with `model.text_head`: the model also predicts text after the image. Each batch holds
`text.i2t_fraction` image-to-text rows (`[empty prompt, begin_image, image, bos, caption, eos]`) and text-to-image
rows (`[prompt, begin_image, image]`, the text after it out of the loss); one sequence length for both, so one
compiled step (`ar_jax/training/steps.py`). Image positions predict image codes from `output`, text positions text
ids from `text_output`. An image-to-text row's image is its caption's context, not a target
(`text.i2t_image_targets=False`), so the image loss is the text-to-image run's, caption dropout included; more
steps than configs/scenes_t2i.py pay for the caption rows. Rotary embeddings move no value, so learned absolute
positions on the image tokens (`model.image_positions`) let a caption read where the objects are: without them two
runs never learned which way a relation goes (as likely as its flip, at 48k caption rows).
`configs/scenes_any.py:smoke` shrinks everything for tests (pair it with configs/scenes_vq.py:smoke).
"""

from pathlib import Path

import ml_collections

from ar_jax.config import load_config_file


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    if variant not in (None, "smoke"):
        raise ValueError(f"unknown variant {variant!r} of scenes_any; use 'smoke' or none.")
    c = load_config_file(str(Path(__file__).with_name("scenes_t2i.py")) + (f":{variant}" if variant else ""))
    c.unlock()
    c.model.text_head = True  # also predict text after the image (image-to-text), with its own output head
    c.model.image_context = "full"  # an image before its caption sees itself both ways (a prefix-LM, as PaliGemma)
    c.model.image_positions = "sincos"  # absolute 2-D positions on the image tokens: captions read where things are
    c.text.i2t_fraction = 0.5  # share of each batch's rows that are image-to-text sequences (the rest text-to-image)
    c.text.i2t_image_targets = False  # an image-to-text row's image tokens: context only (True: also targets)
    c.text.image_loss_weight = 1.0  # loss = image_loss_weight * mean image-token NLL + ...
    c.text.text_loss_weight = 1.0  # ... text_loss_weight * mean caption-token NLL (DALL-E: 7/8 and 1/8)
    if variant is None:
        c.num_train_steps = 4500  # optimizer steps: half text-to-image rows, as many as 3,600 text-to-image-only steps
    return c
