"""Test builders for the files real users have: Hugging Face cache layouts, tiny seeded models of each kind
(open_clip, transformers CLIP, the CONCH architecture) and the authors' Ano-NAViLa checkpoint format.

Everything is generated here with seeded random weights; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch


def hf_cache_entry(cache: Path, repo_id: str, files: dict[str, Path | bytes], revision: str = "0" * 40) -> Path:
    """Lay ``files`` out as huggingface_hub does: blobs, a snapshot of symlinks, and ``refs/main``.

    Returns the snapshot folder.
    """
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    for name, src in files.items():
        data = src if isinstance(src, bytes) else None
        digest = hashlib.sha256(data if data is not None else Path(src).read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            if data is not None:
                blob.write_bytes(data)
            else:
                shutil.copyfile(src, blob)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(Path("../..") / "blobs" / digest if "/" not in name else blob)
    return snap


def tiny_open_clip_repo(folder: Path, seed: int = 11) -> dict[str, Path]:
    """``open_clip_config.json`` and ``open_clip_model.safetensors`` of a tiny CLIP (the demo architecture)."""
    import open_clip
    from safetensors.torch import save_file

    from napari_anonavila.backends.demo import DEMO_MODEL, register_demo_config

    register_demo_config()
    folder.mkdir(parents=True, exist_ok=True)
    cfg = open_clip.get_model_config(DEMO_MODEL)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": cfg, "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                                              "std": [0.26862954, 0.26130258, 0.27577711]}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return {"open_clip_config.json": folder / "open_clip_config.json",
            "open_clip_model.safetensors": folder / "open_clip_model.safetensors"}


def tiny_hf_clip(folder: Path, seed: int = 5) -> Path:
    """A tiny ``transformers`` CLIPModel folder (as PLIP is published): weights, config, tokenizer, processor.

    The tokenizer files are OpenAI CLIP's BPE, taken from open_clip's bundled vocabulary.
    """
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    bpe = SimpleTokenizer()
    vocab = dict(bpe.encoder)
    vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")
    vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
    (folder / "vocab.json").write_text(json.dumps(vocab))
    merges = sorted(bpe.bpe_ranks.items(), key=lambda kv: kv[1])
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m, _ in merges) + "\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tok.save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = CLIPConfig(text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
                                  "num_attention_heads": 2, "num_hidden_layers": 2, "max_position_embeddings": 77},
                     vision_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                                    "num_hidden_layers": 2, "image_size": 64, "patch_size": 16},
                     projection_dim=24)
    CLIPModel(cfg).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


def authors_checkpoint(path: Path, vlm_state: dict[str, torch.Tensor] | None, normal_text: torch.Tensor,
                       abnormal_text: torch.Tensor, centroids: tuple[torch.Tensor, torch.Tensor], seed: int = 3,
                       logit_scale: torch.Tensor | None = None) -> tuple[Path, dict]:
    """An Ano-NAViLa checkpoint in the authors' layout: ``{'epoch', 'model_state', ...}`` with ``VLM.*``, ``MLP.*``,
    the stored text embeddings and the two centroids (1 x D/4). Returns the path and the MLP's state."""
    from napari_anonavila.head import MLP

    torch.manual_seed(seed)
    mlp = MLP(normal_text.shape[1])
    state = {f"MLP.{k}": v.clone() for k, v in mlp.state_dict().items()}
    state.update(normal_text_embs=normal_text.clone(), abnormal_text_embs=abnormal_text.clone(),
                 normal_img_normal_text_centroid=centroids[0].reshape(1, -1).clone(),
                 normal_img_abnormal_text_centroid=centroids[1].reshape(1, -1).clone())
    if vlm_state is not None:
        state.update({f"VLM.{k}": v for k, v in vlm_state.items()})
    if logit_scale is not None:
        state["VLM.logit_scale"] = logit_scale
    torch.save({"epoch": 1, "model_state": state, "optimizer_state": {}, "scheduler_state": {}}, path)
    return path, {k[4:]: v for k, v in state.items() if k.startswith("MLP.")}


def authors_per_image_scores(vlm_model, transform, images: list, normal_text: torch.Tensor,
                             abnormal_text: torch.Tensor, mlp_state: dict, centroids, logit_scale_exp: float):
    """The authors' code path, image by image, in float32: transform, encode, text augmentation loop, distances.

    Returns (scores, top abnormal term index, top normal term index) per image. Written from METHOD.md, without
    our batched head. A PIL image goes to the transform as it is (the authors' datasets pass ``Image.open(path)``);
    an array is made RGB first.
    """
    from PIL import Image

    w1, b1 = mlp_state["linear1.weight"], mlp_state["linear1.bias"]
    w2, b2 = mlp_state["linear2.weight"], mlp_state["linear2.bias"]
    w3, b3 = mlp_state["linear3.weight"], mlp_state["linear3.bias"]

    def rho(x):
        return torch.relu(torch.relu(x @ w1.T + b1) @ w2.T + b2) @ w3.T + b3

    out = []
    with torch.no_grad():
        for img in images:
            x = transform(img if isinstance(img, Image.Image) else Image.fromarray(img).convert("RGB"))[None]
            v = vlm_model.encode_image(x, proj_contrast=True, normalize=True)[0].float()
            hs, tops = [], []
            for texts in (normal_text, abnormal_text):
                w = torch.softmax(logit_scale_exp * (texts @ v), dim=0)
                u = torch.stack([rho(torch.cat([v, torch.exp(w[k]) * texts[k]])) for k in range(len(texts))])
                hs.append(u.mean(0))
                tops.append(int(torch.argmax(w)))
            d_n = 1 - torch.nn.functional.cosine_similarity(hs[0][None].double(), centroids[0].reshape(1, -1).double())
            d_a = 1 - torch.nn.functional.cosine_similarity(hs[1][None].double(), centroids[1].reshape(1, -1).double())
            out.append((float(d_n + d_a), tops[1], tops[0]))
    return out


def hold_folder(folder: Path):
    """A separate process that claims ``folder`` as a run does (the plugin's own lock) and holds it until killed.

    Returns the Popen once the claim is held."""
    import subprocess
    import sys

    code = ("import sys, time\nfrom napari_anonavila._atomic import claimed_dir\n"
            "with claimed_dir(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.stdout.close()  # nothing more comes
    return proc


def result_of_scores(rows, cols, size_l0: int, shape_rc, score, *, marks=None, path: str = "s.svs"):
    """A SlideResult from bare score columns, for property tests of the writers (the same type a scoring run
    returns; one term per pool: 'a' and 'b')."""
    import numpy as np

    from napari_anonavila.grid import PatchGrid
    from napari_anonavila.result import PatchTerms, SlideResult
    from napari_anonavila.reviews import ReviewMarks

    score = np.asarray(score, float)
    n = len(score)
    cells = np.stack([np.asarray(rows), np.asarray(cols)], axis=1).astype(np.int64)
    grid = PatchGrid(size_l0, tuple(shape_rc), cells, np.ones(n, np.float32))
    terms = PatchTerms(("a",), ("b",), np.zeros((n, 1), np.int32), np.full((n, 1), 0.5, np.float32),
                       np.zeros((n, 1), np.int32), np.full((n, 1), 0.25, np.float32))
    nan = np.full(n, np.nan)
    return SlideResult({"path": path}, grid, score / 2, score / 2, score, terms, "sum", nan, nan,
                       {"calibrated": False}, marks=marks or ReviewMarks())


def refused(res, *needles: str) -> str:
    """A CLI run refused in one line (exit 2, no traceback) whose last line holds all ``needles``; that line."""
    assert res.returncode == 2, (res.returncode, res.stdout[-500:], res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    for n in needles:
        assert n in last, last
    return last


EXE = str(Path(sys.executable).with_name("anonavila"))  # the installed command, as a user runs it


def cli(*args, cwd=None, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run the installed ``anonavila`` with ``args`` (any objects, as text); its output captured."""
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd)
