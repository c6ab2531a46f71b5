"""Make ``authors_training.json``: MLP weights and centroids trained by the authors' own trainer.

Run once with a checkout of the authors' code (github.com/strue02/ICCV2025_Ano-NAViLa, unmodified) and an
environment with open_clip_torch, pandas and torchvision:

    python tests/data/make_authors_training.py /path/to/ICCV2025_Ano-NAViLa ../shared/data/words \\
        tests/data/authors_training.json

Their ``engine.trainer.train`` and ``prepare_centroids`` run as in their ``main.py``, with their config's values
(seed 42, Adam, summed accumulation) at a small scale (``training_case.SETTINGS``), on the PNG patches of
``training_case.py``. The VLM is the tiny open_clip model of ``training_case.py`` in place of CONCH (their code
uses only its ``encode_image`` and ``logit_scale``), and the text embeddings are their CSV prompts through it.
Nothing of their code is copied; the JSON holds the case's settings and their results.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import training_case as case


def main(authors_repo: str, words: str, out: str) -> None:
    import open_clip
    import pandas as pd
    import torch

    sys.path.insert(0, authors_repo)
    from engine.trainer import prepare_centroids, train

    class VLM(torch.nn.Module):
        """open_clip's CLIP behind the two things their code calls on CONCH."""

        def __init__(self, clip) -> None:
            super().__init__()
            self.clip, self.logit_scale = clip, clip.logit_scale

        def encode_image(self, imgs, proj_contrast=True, normalize=True):
            return self.clip.encode_image(imgs, normalize=normalize)

    open_clip.add_model_config(case.CONFIG.parent)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_dir, val_dir = case.write_patches(tmp)
        weights = case.write_weights(tmp / "weights.safetensors")
        clip, _, preprocess = open_clip.create_model_and_transforms(case.MODEL, pretrained=str(weights))
        clip.eval()
        tok = open_clip.get_tokenizer(case.MODEL)
        texts = {}
        with torch.no_grad():
            for kind, header in (("normal", "Normal"), ("abnormal", "Abnormal")):
                prompts = list(pd.read_csv(Path(words) / f"{kind}_words.csv")[header])
                texts[kind] = clip.encode_text(tok(prompts), normalize=True)
        s = case.SETTINGS
        args = {"prefix": "pinned", "random_seed": s["seed"], "device": torch.device("cpu"),
                "logger": logging.getLogger("authors"), "accumulate_batches": s["accumulate"],
                "train_imgs_path": str(train_dir), "VLM_img_preprocess": preprocess,
                "train_batch_size": s["batch_size"],
                "VLM": VLM(clip), "embs_dim": int(texts["normal"].shape[1]), "normal_text_embs": texts["normal"],
                "abnormal_text_embs": texts["abnormal"], "optimizer": "adam", "learning_rate": s["lr"],
                "epochs": s["epochs"], "val_imgs_path": str(val_dir)}
        cwd = os.getcwd()
        os.chdir(tmp)  # their trainer writes ./pth/<prefix>/
        try:
            train(args)
            prepare_centroids(args)
        finally:
            os.chdir(cwd)
        model = args["trained_model"]
        from data.dataloader import normal_img_Dataset

        order = [name for name, _ in normal_img_Dataset(str(train_dir)).samples]
        doc = {"made_by": "tests/data/make_authors_training.py with the authors' engine/trainer.py",
               "settings": s, "file_order": order,
               "encoding": "base64 of little-endian float32, with each tensor's shape",
               "tensors": {k: _pack(v) for k, v in [*model.MLP.state_dict().items(),
                                                    ("centroid_normal", model.normal_img_normal_text_centroid),
                                                    ("centroid_abnormal", model.normal_img_abnormal_text_centroid)]}}
    Path(out).write_text(json.dumps(doc) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(order)} training files, {sum(v.numel() for v in model.MLP.state_dict().values())} "
          "MLP values")


def _pack(t) -> dict:
    import base64

    data = t.detach().float().numpy().astype("<f4").tobytes()
    return {"shape": list(t.shape), "data": base64.b64encode(data).decode()}


if __name__ == "__main__":
    main(*sys.argv[1:4])
