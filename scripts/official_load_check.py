#!/usr/bin/env python3
"""Do the official InternVL classes load the checkpoints `internvl train` writes, and compute
from them the same losses as `internvl train loss`?

For each training fixture (tests/fixtures/train_stage2, train_contrastive, train_sft: tiny
models in the release format) this script
  1. trains a few steps with `internvl train stage2 | contrastive | sft` (so the weights differ
     from the fixture's),
  2. evaluates the objective on the fixture's batch with `internvl train loss --json`,
  3. loads the written checkpoint with the official classes (`from_pretrained`, asserting no
     missing, unexpected or mismatched keys), runs the official forward on the same batch and
     prints max|diff|/max|ref| of each loss against the tolerance (1e-5).

It needs a checkout of OpenGVLab/InternVL (commit 2410d1db, the fixtures' commit; only read, never
copied) and a Python with torch, transformers 4.37.2, timm, einops, sentencepiece, safetensors:

    python3 scripts/official_load_check.py --official /path/to/InternVL \
        --bin target/release/internvl

Like the fixtures' generator, it patches two things at run time: `peft` is stubbed (LoRA is
unused), and QLLaMA's cross-attention takes the ViT width from the config instead of the
hard-coded 3200 of InternViT-6B (a no-op for the released model).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

TOLERANCE = 1e-5
ROOT = Path(__file__).resolve().parent.parent


def run(cmd):
    """Runs one of our commands; returns its stdout (fails loudly with its stderr)."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{done.stderr}")
    return done.stdout


def train_and_score(args, case, command, objective, extra, work):
    """Trains the fixture model a few steps, then our loss of the fixture batch on the result."""
    fixture = args.fixtures / case
    out = work / case
    run([args.bin, "train", command, "--model", fixture / "model", "--out", out, "--seed", "1",
         *extra])
    model = out / "last"
    ours = json.loads(run([args.bin, "train", "loss", "--objective", objective, "--model", model,
                           "--batch", fixture / "inputs/batch.safetensors", "--json"]))
    return model, ours


def caption_jsonl(work, fixture, items):
    path = work / f"{fixture.name}.jsonl"
    with open(path, "w") as f:
        for image, caption in items:
            f.write(json.dumps({"image": str(fixture / "inputs" / image), "caption": caption}) + "\n")
    return path


def stub_peft():
    import transformers  # noqa: F401  (it probes for peft on import: load it before the stub)

    peft = types.ModuleType("peft")
    peft.LoraConfig = peft.get_peft_model = None
    sys.modules["peft"] = peft


def patch_cross_attention_width(qllama_module, vision_width):
    """QLLaMA's LlamaCrossAttention hard-codes the InternViT-6B width (3200)."""
    import torch.nn as nn

    cls = qllama_module.LlamaCrossAttention
    original = cls.__init__

    def init(self, config):
        original(self, config)
        self.vision_hidden_size = vision_width
        width = self.num_heads * self.head_dim
        self.k_proj = nn.Linear(vision_width, width, bias=False)
        self.v_proj = nn.Linear(vision_width, width, bias=False)
        self.norm2 = qllama_module.LlamaRMSNorm(vision_width, eps=config.rms_norm_eps)

    cls.__init__ = init


def load_checked(cls, path, **kwargs):
    import torch

    model, info = cls.from_pretrained(path, torch_dtype=torch.float32, output_loading_info=True,
                                      **kwargs)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        sys.exit(f"{path}: the official {cls.__name__} reports {bad}")
    return model.eval()


def batch(fixture, prefix=""):
    from safetensors.torch import load_file

    tensors = load_file(str(fixture / "inputs/batch.safetensors"))
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def rel(ours, theirs):
    return abs(ours - theirs) / max(abs(theirs), 1e-30)


def report(case, pairs):
    worst = 0.0
    for name, ours, theirs in pairs:
        diff = rel(ours, theirs)
        worst = max(worst, diff)
        print(f"  {case:18} {name:14} internvl {ours:.7f}  official {theirs:.7f}  "
              f"max|diff|/max|ref| {diff:.1e} (tolerance {TOLERANCE:.0e})")
    return worst


def official_g_model(args, class_name, model_dir):
    """Loads `model_dir` with internvl_g's stage-2 class `class_name` (patched as above)."""
    sys.path.insert(0, str(args.official / "internvl_g"))
    stub_peft()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{29500 + os.getpid() % 1000}",
                                rank=0, world_size=1)
    from internvl.model.internvl_stage2 import modeling_internvl, modeling_qllama

    config = json.loads((model_dir / "config.json").read_text())
    patch_cross_attention_width(modeling_qllama, config["vision_config"]["hidden_size"])
    return load_checked(getattr(modeling_internvl, class_name), model_dir)


def case_stage2(args, work):
    import torch

    fixture = args.fixtures / "train_stage2"
    data = caption_jsonl(work, fixture, [("img0_90x70.png", "A dog runs on the beach."),
                                         ("img1_64x96.png", "Two people are playing TENNIS!"),
                                         ("img2_120x80.png", "A red car near a house.")])
    model_dir, ours = train_and_score(args, "train_stage2", "stage2", "stage2",
                                      ["--data", data, "--steps", "2", "--batch-size", "3",
                                       "--lr", "5e-3", "--warmup-steps", "1"], work)
    model = official_g_model(args, "InternVLModel", model_dir)
    with torch.no_grad():
        out = model(**batch(fixture))
    return report("train_stage2", [
        ("loss", ours["loss"], out.loss.item()),
        ("itc", ours["components"]["itc"], out.loss_itc.item()),
        ("itm", ours["components"]["itm"], out.loss_itm.item()),
        ("itg", ours["components"]["itg"], out.loss_itg.item()),
    ])


def case_contrastive(args, work):
    import torch
    import torch.nn.functional as F

    fixture = args.fixtures / "train_contrastive"
    data = caption_jsonl(work, fixture, [("img0_80x80.png", "a cat sleeping on a sofa"),
                                         ("img1_100x64.png", "a bowl of fresh fruit"),
                                         ("img2_72x90.png", "a city street at night")])
    model_dir, ours = train_and_score(args, "train_contrastive", "contrastive", "clip",
                                      ["--data", data, "--steps", "2", "--batch-size", "3",
                                       "--lr", "5e-3", "--warmup-steps", "1"], work)
    model = official_g_model(args, "InternVL_C", model_dir)
    inputs = batch(fixture, "clip/")
    with torch.no_grad():
        per_image, per_text = model(inputs["pixel_values"], inputs["text_ids"])
    target = torch.arange(per_image.shape[0])
    loss = (F.cross_entropy(per_image, target) + F.cross_entropy(per_text, target)) / 2
    return report("train_contrastive", [("clip loss", ours["loss"], loss.item())])


def case_sft(args, work):
    import torch

    fixture = args.fixtures / "train_sft"
    model_dir, ours = train_and_score(args, "train_sft", "sft", "sft",
                                      ["--data", fixture / "inputs/sft.jsonl", "--steps", "2",
                                       "--batch-size", "2", "--lr", "1e-3", "--warmup-steps", "1",
                                       "--trainable", "mlp1.*"], work)
    sys.path.insert(0, str(args.official / "internvl_chat"))
    stub_peft()
    from transformers import AutoTokenizer

    from internvl.model.internvl_chat import InternVLChatConfig, InternVLChatModel

    config = InternVLChatConfig.from_pretrained(model_dir)
    config.llm_config._attn_implementation = "eager"
    model = load_checked(InternVLChatModel, model_dir, config=config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, use_fast=False)
    model.img_context_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    with torch.no_grad():
        out = model(**batch(fixture))
    return report("train_sft", [("loss", ours["loss"], out.loss.item())])


CASES = {"stage2": case_stage2, "contrastive": case_contrastive, "sft": case_sft}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True,
                        help="a checkout of OpenGVLab/InternVL (commit 2410d1db)")
    parser.add_argument("--bin", type=Path, default=ROOT / "target/release/internvl")
    parser.add_argument("--fixtures", type=Path, default=ROOT / "tests/fixtures")
    parser.add_argument("--case", choices=sorted(CASES), help="one case (default: all, each in "
                        "its own process: internvl_g and internvl_chat are both `internvl`)")
    args = parser.parse_args()
    args.bin, args.fixtures = args.bin.resolve(), args.fixtures.resolve()
    if args.case:
        with tempfile.TemporaryDirectory() as work:
            worst = CASES[args.case](args, Path(work))
        sys.exit(0 if worst <= TOLERANCE else 1)
    failed = []
    for case in sorted(CASES):
        done = subprocess.run([sys.executable, __file__, "--official", args.official, "--bin",
                               args.bin, "--fixtures", args.fixtures, "--case", case])
        if done.returncode != 0:
            failed.append(case)
    print("all checkpoints load in the official code with equal losses" if not failed
          else f"FAILED: {', '.join(failed)}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
