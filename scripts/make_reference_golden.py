"""Run the public RecLMIS code once and record what the golden test compares against.

    python scripts/make_reference_golden.py --reference-dir ~/src/RecLMIS [--out tests/fixtures/reference_golden]
    python scripts/make_reference_golden.py --reference-dir ~/src/RecLMIS --full --out /tmp/ref_full

``--reference-dir`` is your checkout of https://github.com/ShawnHuang497/RecLMIS with its requirements installed
(``clip``, ``ml_collections``, ``timm``, ``einops``, ``opencv``, ``scikit-learn``). Nothing is written into it:
the CLIP file its loader reads is a seeded state dict written to ``--work`` (the reference falls back to
``torch.load`` of a plain state dict when the file is not a TorchScript archive). The reference model is built
with deterministic weights from ``reference_recipe.py`` (BatchNorm statistics calibrated here, in train mode
over the inputs, then stored), saved exactly as its training script saves (``module.`` prefix, the full CLIP
inside), and run through its own test pipeline (``read_text``, ``ImageToImage2D``, ``ValGenerator``, batch 1,
threshold 0.5, per-image Dice as ``test_model.py``) and once batched. ``--full`` uses ViT-B/32 CLIP sizes and
keeps the full outputs for the full-scale measurement instead of writing the small committed fixture.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_recipe as recipe  # noqa: E402


def save_like_reference(state: dict[str, torch.Tensor], path: Path, params: list[torch.Tensor]) -> None:
    """``torch.save`` as the reference's ``save_checkpoint`` (trained under DataParallel: ``module.`` keys)."""
    opt = torch.optim.Adam(params, lr=3e-4)
    torch.save({"epoch": 7, "best_model": True, "model": "RecLMIS",
                "state_dict": {f"module.{k}": v for k, v in state.items()},
                "val_loss": torch.tensor(0.3125), "optimizer": opt.state_dict()}, str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference-dir", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/fixtures/reference_golden")
    ap.add_argument("--work", type=Path, default=Path("/tmp/reclmis_reference_work"))
    ap.add_argument("--full", action="store_true", help="ViT-B/32 CLIP sizes; keep full outputs (measurement)")
    ap.add_argument("--layers", type=int, default=4, choices=(3, 4), help="4: Config_covid19, 3: Config_MosMedPlus")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    ref = args.reference_dir.resolve()
    sys.path.insert(0, str(ref))
    import nets.RecLMIS as refmod  # the reference code
    from Load_Dataset import ImageToImage2D, ValGenerator
    from nets.module_clip import CLIP
    from utils import read_text

    config = __import__("Config_covid19" if args.layers == 4 else "Config_MosMedPlus")
    vit = config.get_ViT_config()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    dims = recipe.FULL_CLIP if args.full else recipe.SMALL_CLIP
    clip = CLIP(*dims.values())
    clip_keys = [(f"clip.{k}", tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in clip.state_dict().items()]
    clip_state = {k[5:]: v for k, v in recipe.make_state(clip_keys).items()}
    torch.save(clip_state, str(work / "clip.pt"))
    refmod._PT_NAME = {vit.clip_backbone: str(work / "clip.pt")}  # absolute: os.path.join keeps it
    model = refmod.RecLMIS(config, vit, n_channels=config.n_channels, n_classes=config.n_labels)
    keys = [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()]
    model.load_state_dict(recipe.make_state(keys), strict=True)
    model.aux = False  # the reconstructors move tensors to a CUDA device; they never touch the segmentation output

    # The reference test pipeline on a QaTa-layout folder.
    test = work / "datasets/Covid19/Test_Folder"
    imgs = recipe.make_images(test / "img")
    masks = recipe.make_masks(test / "labelcol")
    import pandas as pd

    pd.DataFrame({"Image": [m.name for m in masks], "Description": recipe.NOTES}).to_excel(
        test / "Test_text.xlsx", index=False)
    text = read_text(str(test / "Test_text.xlsx"))
    if all(v == n for v, n in zip(text.values(), recipe.NOTES)):
        # read_text fills with `df.Description[i] = ...`, a chained assignment that pandas >= 3 (copy-on-write)
        # drops; the authors ran it on pandas < 3, where it takes effect. Apply it as it was applied there.
        print(f"pandas {pd.__version__}: the reference's read_text fill had no effect; applying it as pandas < 3 did")
        text = {k: v + " EOF XXX" * (9 - len(v.split())) if len(v.split()) < 9 else v for k, v in text.items()}
    ds = ImageToImage2D(str(test) + "/", "Covid19", text,
                        ValGenerator(output_size=[224, 224]), image_size=224, data_name="Covid19",
                        token_len=18, config=config, mode="val")
    samples = sorted((ds[i] for i in range(len(ds))), key=lambda s: s[1])
    names = [s[1] for s in samples]
    image = torch.stack([s[0]["image"] for s in samples])
    tokens = torch.stack([s[0]["text_token"] for s in samples])
    tmask = torch.stack([s[0]["text_mask"] for s in samples])
    labels = [s[0]["label"].numpy() for s in samples]

    # Calibrate BatchNorm statistics in train mode (cumulative average, no dropout), then freeze them.
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
        if isinstance(m, torch.nn.MultiheadAttention):
            m.dropout = 0.0
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    model.train()
    model(image, None, tokens, tmask, mode="train")
    model.eval()
    state = model.state_dict()
    bn = {k: v.numpy().astype(np.float32) for k, v in state.items() if k.endswith(("running_mean", "running_var"))}
    save_like_reference(state, work / "best_model-RecLMIS.pth.tar", [p for p in model.parameters() if p.requires_grad])

    captured = {}
    model.interact.attn_text.register_forward_hook(lambda m, i, o: captured.__setitem__("e_new", o[0].permute(1, 0, 2)))
    model.interact.register_forward_hook(lambda m, i, o: captured.__setitem__("v_new", o[1]))
    model.outc.register_forward_hook(lambda m, i, o: captured.__setitem__("logits", o))
    # batch 1, as test_model.py
    from sklearn.metrics import jaccard_score

    probs, dice, iou = [], [], []
    for k in range(len(samples)):
        out, _ = model(image[k : k + 1], None, tokens[k : k + 1], tmask[k : k + 1], mode="train")
        pred = (out > 0.5).float()[0, 0].numpy()
        lab = labels[k]
        dice.append(float(2 * np.sum(lab * pred) / (np.sum(lab) + np.sum(pred) + 1e-5)))
        iou.append(float(jaccard_score(lab.reshape(-1), pred.reshape(-1))))
        probs.append(out[0, 0].numpy())
    probs = np.stack(probs)
    out_b, _ = model(image, None, tokens, tmask, mode="train")  # batched
    e_new, v_new, logits = (captured[k].numpy() for k in ("e_new", "v_new", "logits"))
    batch_diff = float(np.abs(out_b[:, 0].numpy() - probs).max())
    note_effect = float(np.abs(probs[0] - model(image[:1], None, tokens[3:4], tmask[3:4], mode="train")[0][0, 0].numpy()).mean())
    pix = (image.numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)  # what the network saw, BGR
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "layers": args.layers, "clip": dims, "names": names, "notes": [recipe.NOTES[[m.name for m in masks].index(f"mask_{n}")] for n in names],
        "dice": dice, "iou": iou, "dice_mean": float(np.mean(dice)), "iou_mean": float(np.mean(iou)),
        "pixels_sha256": [hashlib.sha256(p.tobytes()).hexdigest() for p in pix],
        "batched_vs_single_max_abs": batch_diff, "note_effect_mean_abs": note_effect,
    }
    if args.full:
        np.savez_compressed(args.out / "reference_outputs.npz", probs=probs, e_new=e_new, v_new=v_new, logits=logits,
                            tokens=tokens.numpy(), mask=tmask.numpy())
    else:
        (args.out / "keys.json").write_text(json.dumps({"keys": keys, "clip_keys": clip_keys}), encoding="utf-8")
        np.savez_compressed(
            args.out / "golden.npz", tokens=tokens.numpy().astype(np.int64), mask=tmask.numpy().astype(np.int64),
            probs16=np.round(probs * 65535).astype(np.uint16), logits_sub=logits[:, 0, ::4, ::4],
            e_new=e_new[:, :, ::16], v_new=v_new[:, ::4, ::16], **{f"bn/{k}": v for k, v in bn.items()})
    (args.out / "golden.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    print(json.dumps({k: meta[k] for k in ("dice", "dice_mean", "batched_vs_single_max_abs", "note_effect_mean_abs")}))


if __name__ == "__main__":
    main()
